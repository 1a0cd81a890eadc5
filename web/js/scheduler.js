// Latest-wins request scheduling for live predictions: at most one request in
// flight and at most one per `minInterval` ms; asking again while one is in
// flight or waiting just marks "send again with the newest state", so a fast
// stroke costs a handful of requests, and the last answer is always for the
// last state asked about.

export class RequestScheduler {
  /**
   * send(): async, does one request (reads the newest state itself).
   * onBusy(busy): true when work is pending or in flight, false when idle.
   */
  constructor({ minInterval, send, onBusy = () => {} }) {
    this.minInterval = minInterval;
    this.send = send;
    this.onBusy = onBusy;
    this.inFlight = false;
    this.pending = false;
    this.timer = 0;
    this.lastSent = -Infinity;
  }

  /** True while a request waits for its turn (the answer shown is not final). */
  get waiting() {
    return this.pending || this.timer !== 0;
  }

  /** Asks for one more request, with the state as it will be when it goes out. */
  request() {
    this.pending = true;
    this.onBusy(true);
    this.kick();
  }

  /** Drops a waiting request; one in flight finishes (its answer is the caller's to ignore). */
  cancel() {
    this.pending = false;
    clearTimeout(this.timer);
    this.timer = 0;
    if (!this.inFlight) this.onBusy(false);
  }

  kick() {
    if (this.inFlight || !this.pending || this.timer) return;
    const wait = this.lastSent + this.minInterval - performance.now();
    if (wait > 0) {
      this.timer = setTimeout(() => {
        this.timer = 0;
        this.kick();
      }, wait);
      return;
    }
    this.pending = false;
    this.inFlight = true;
    this.lastSent = performance.now();
    Promise.resolve().then(this.send).catch(() => {}).finally(() => {
      this.inFlight = false;
      if (this.pending) this.kick();
      else if (!this.timer) this.onBusy(false);
    });
  }
}
