/* The web page's files, built into the binary at compile time from web/
 * (and the chart library from node_modules) by scripts/embed.c. */
#ifndef MNISTD_SRV_ASSETS_H
#define MNISTD_SRV_ASSETS_H

#include <stddef.h>

typedef struct srv_asset {
  const char *path;            /* "/index.html", "/vendor/uPlot.iife.min.js" */
  const unsigned char *data;
  size_t len;
  const char *etag;            /* quoted content hash */
} srv_asset;

/* NULL when no asset has that path. */
const srv_asset *srv_asset_find(const char *path);
/* Number of assets and the table, for tests. */
size_t srv_assets_count(const srv_asset **all);

#endif
