/* The registry: models (srv_models.h) and data sets (srv_data.h). Kept as
 * one include for the code that wants both. */
#ifndef MNISTD_SRV_REGISTRY_H
#define MNISTD_SRV_REGISTRY_H

#include "srv_data.h"
#include "srv_models.h"

#endif
