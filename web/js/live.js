// The daemon-wide event stream (GET /v1/events) turned into bus events, so the
// panels refresh when something changes instead of asking again and again:
// a job changing state refreshes the job list (and the models when one
// succeeded), an activation refreshes the models and the status. It also
// learns the daemon's role from `hello`: a read-only replica of a primary
// (mnistd serve --follow) has no jobs, uploads or model changes, and the
// page must neither offer them nor ask for them.
import { daemonEvents } from './api.js';
import { emit } from './bus.js';

const ROLE_WAIT_MS = 3000;   // how long start() waits for `hello`
let es = null;
let connected = false;
let role = null;             // {replica, primary, model} from the last hello

function parse(e) {
  try {
    return JSON.parse(e.data);
  } catch {
    return {};
  }
}

function setConnected(on) {
  if (on === connected) return;
  connected = on;
  emit('live', { connected });
}

/**
 * Opens the stream. Resolves with {replica, primary, model, connected: true}
 * once the first `hello` arrives, or with {replica: false, connected: false}
 * when none came within a few seconds (an older daemon, a proxy that
 * buffers): the panels then poll as before until a 'live' event says the
 * stream is open. Never rejects.
 */
export function startLive() {
  return new Promise((resolve) => {
    let settled = false;
    const settle = (r) => {
      if (!settled) {
        settled = true;
        resolve(r);
      }
    };
    const timer = setTimeout(() => settle({ replica: false, primary: null, connected: false }), ROLE_WAIT_MS);
    es = daemonEvents();
    es.addEventListener('hello', (e) => {
      const d = parse(e);
      const first = role === null;
      role = { replica: typeof d.primary === 'string', primary: d.primary || null, model: d.model ?? null, connected: true };
      setConnected(true);
      emit('daemon', role);
      clearTimeout(timer);
      settle(role);
      // After a reconnect the daemon may have changed meanwhile.
      if (!first) emit('resync');
    });
    // The daemon no longer has the events after our last id (it restarted, or
    // we were away long): re-read everything.
    es.addEventListener('sync', () => emit('resync'));
    es.addEventListener('model.activated', () => {
      emit('refresh-models');
      emit('check-status');
    });
    es.addEventListener('job.state', (e) => {
      const d = parse(e);
      emit('refresh-jobs');
      // A job that ended well made a model, active or not.
      if (d.state === 'succeeded') emit('refresh-models');
    });
    // EventSource reconnects by itself (sending Last-Event-ID); until it
    // does, the panels fall back to polling and the status says why.
    es.addEventListener('error', () => {
      setConnected(false);
      emit('check-status');
    });
  });
}
