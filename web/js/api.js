// Talks to the mnistd HTTP API. Every URL the page uses is built here and
// nowhere else (the EventSource ones included), so the API surface the page
// depends on can be read in one screen. Paths are relative so the page also
// works behind a reverse proxy that mounts the daemon under a sub-path.

const TOKEN_KEY = 'mnistd.apiToken';

export class ApiError extends Error {
  /** status 0 means the daemon could not be reached at all. */
  constructor(status, message, body = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.body = body;
  }
}

export function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || '';
  } catch {
    return '';
  }
}

export function setToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    /* storage disabled: the token just isn't remembered */
  }
}

/**
 * fetch() wrapper: JSON in, JSON out, errors as ApiError with the daemon's
 * own message ({"error":{"code":...,"message":...}}).
 * options: method, json (object body), body + type (raw body), signal.
 */
async function api(path, { method = 'GET', json, body, type, signal } = {}) {
  const headers = { Accept: 'application/json' };
  if (json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  } else if (type) {
    headers['Content-Type'] = type;
  }
  const token = getToken();
  if (method !== 'GET' && method !== 'HEAD' && token) headers.Authorization = `Bearer ${token}`;
  let res;
  try {
    res = await fetch(path.replace(/^\//, ''), { method, headers, body, signal, cache: 'no-store' });
  } catch (err) {
    if (err && err.name === 'AbortError') throw err;
    throw new ApiError(0, 'Cannot reach the mnistd daemon. Is it running?');
  }
  let data = null;
  if ((res.headers.get('Content-Type') || '').includes('json')) {
    data = await res.json().catch(() => null);
  }
  if (!res.ok) {
    const message = (data && data.error && data.error.message) || `${res.status} ${res.statusText || 'error'}`;
    throw new ApiError(res.status, message, data);
  }
  return data;
}

/** One sentence a person can act on, for any error thrown by api(). */
export function describeError(err) {
  if (!(err instanceof ApiError)) return `Unexpected error: ${err && err.message ? err.message : err}`;
  if (err.status === 0) return err.message;
  if (err.status === 401 || err.status === 403) {
    return getToken()
      ? `The daemon refused the API token (${err.status}): check the token in the “API token” field.`
      : 'This daemon needs an API token for changes: enter it in the “API token” field (under “Train a model”) and try again.';
  }
  return err.message;
}

export const isAuthError = (err) => err instanceof ApiError && (err.status === 401 || err.status === 403);

const enc = encodeURIComponent;
const query = (params) => {
  const q = Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== '')
    .map(([k, v]) => `${enc(k)}=${enc(v)}`).join('&');
  return q ? `?${q}` : '';
};

// ------------------------------------------------------------ the routes

/** GET /readyz: {model} while a model is active; ApiError 503 while none is. */
export const getReady = () => api('readyz');

/** GET /v1/models: {models: [...]}. */
export const listModels = () => api('v1/models');
export const activateModel = (id) => api(`v1/models/${enc(id)}/activate`, { method: 'POST' });
export const deleteModel = (id) => api(`v1/models/${enc(id)}`, { method: 'DELETE' });
/** GET /v1/models/ID/evaluation: confusion matrix and misclassified images. */
export const evaluateModel = (id) => api(`v1/models/${enc(id)}/evaluation`);
/** URL of a model's file, for a download link (format: undefined = native). */
export const modelFileUrl = (id, format) => `v1/models/${enc(id)}/file${query({ format })}`;

/** GET /v1/jobs: {jobs: [...]}, newest first; filter: {state, limit}. */
export const listJobs = (filter = {}) => api(`v1/jobs${query(filter)}`);
export const getJob = (id) => api(`v1/jobs/${enc(id)}`);
export const createJob = (config) => api('v1/jobs', { method: 'POST', json: config });
export const cancelJob = (id) => api(`v1/jobs/${enc(id)}/cancel`, { method: 'POST' });
/**
 * The job's Server-Sent Events (state, progress, epoch, end). The caller
 * owns the returned EventSource and closes it.
 */
export const jobEvents = (id) => new EventSource(`v1/jobs/${enc(id)}/events`);
/**
 * The daemon-wide Server-Sent Events: `hello` (the active model, and the
 * primary's URL when this daemon is a read-only replica), `model.activated`,
 * `job.state`, `sync`. The caller owns the returned EventSource.
 */
export const daemonEvents = () => new EventSource('v1/events');

/** GET /v1/datasets: {datasets: [...]}. */
export const listDatasets = () => api('v1/datasets');
export const listArchitectures = () => api('v1/architectures');
/** The daemon's shape check: {valid, parameters} or {valid: false, message, layer}. */
export const validateLayers = (layers, batchSize) =>
  api('v1/architectures/validate', { method: 'POST', json: { layers, batch_size: batchSize } });
/** A random test image of `dataset` (the active model's when empty). */
export const randomSample = (dataset) => api(`v1/samples/random${query({ dataset })}`);

/** POST /v1/predict?explain=1 with a PNG blob (the drawing pad). */
export const predictPng = (blob) => api('v1/predict?explain=1', { method: 'POST', body: blob, type: 'image/png' });
/** POST /v1/predict?explain=1 with 784 MNIST pixels (0 = background). */
export const predictPixels = (pixels) => api('v1/predict?explain=1', { method: 'POST', json: { image: pixels } });

// ------------------------------------------------------------ data sets
/** GET /v1/datasets/NAME: one data set's description. */
export const getDataset = (name) => api(`v1/datasets/${enc(name)}`);
/** DELETE /v1/datasets/NAME (409 while a job uses it; built-ins refused). */
export const deleteDataset = (name) => api(`v1/datasets/${enc(name)}`, { method: 'DELETE' });
/** GET /v1/datasets/NAME/samples/random: {label, class, pixels}. */
export const datasetSample = (name) => api(`v1/datasets/${enc(name)}/samples/random`);

/** The Content-Type the daemon expects for an upload, from the file's name. */
export function uploadType(file) {
  const n = (file.name || '').toLowerCase();
  if (n.endsWith('.zip')) return 'application/zip';
  if (n.endsWith('.tar.gz') || n.endsWith('.tgz')) return 'application/gzip';
  if (n.endsWith('.tar')) return 'application/x-tar';
  if (n.endsWith('.csv')) return 'text/csv';
  return file.type || 'application/octet-stream';
}

/**
 * POST /v1/datasets?name=NAME with the file as the body. XMLHttpRequest,
 * not fetch: only it reports upload progress. onProgress(fraction) runs
 * while the body goes out, then onProgress(null) while the daemon converts.
 * Resolves to the new data set; rejects with an ApiError carrying the
 * daemon's message.
 */
export function uploadDataset(name, file, { preprocess, onProgress } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', `v1/datasets${query({ name, preprocess })}`);
    xhr.setRequestHeader('Content-Type', uploadType(file));
    xhr.setRequestHeader('Accept', 'application/json');
    const token = getToken();
    if (token) xhr.setRequestHeader('Authorization', `Bearer ${token}`);
    xhr.upload.onprogress = (e) => { if (onProgress && e.lengthComputable) onProgress(e.loaded / e.total); };
    xhr.upload.onload = () => { if (onProgress) onProgress(null); };
    xhr.onerror = () => reject(new ApiError(0, 'Cannot reach the mnistd daemon. Is it running?'));
    xhr.onload = () => {
      let data = null;
      try { data = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(data);
      else reject(new ApiError(xhr.status, (data && data.error && data.error.message) || `${xhr.status} error`, data));
    };
    xhr.send(file);
  });
}
