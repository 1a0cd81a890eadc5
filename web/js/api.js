// Talks to the mnistd HTTP API. Paths are relative so the page also works
// behind a reverse proxy that mounts the daemon under a sub-path.

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
export async function api(path, { method = 'GET', json, body, type, signal } = {}) {
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
