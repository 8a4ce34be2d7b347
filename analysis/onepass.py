"""Several analyses over one read of a trace (`report`: why, deps and the page).

Each analysis is a function of an event iterable (explain, undeclared_accesses,
report.collect): rather than make each one a push-style object, each runs in
its own thread on the same events, handed over in batches through bounded
queues. Reading a trace is the bulk of the time on a big log (2 GiB of
output is 2 GiB to decompress and decode, per pass): one read instead of
three took `report` on such a trace from 3 passes to 1 (docs/performance.md,
"Logs at scale"). Threads add no parallelism under the GIL, and need none.

The events are shared, not copied: the analyses only read them.
"""

import queue
import threading

# Events handed over at a time (fewer when they carry more than BATCH_BYTES
# of log: a write keeps up to 64 KB), and batches waiting per analysis: what
# the slowest analysis lets pile up.
BATCH = 2048
BATCH_BYTES = 4 << 20
WAITING = 4


def one_pass(events, *consumers) -> list:
    """[consumer(iterable) for consumer in consumers], over one iteration of
    `events`; an exception in a consumer is raised here, after all ended."""
    queues = [queue.Queue(maxsize=WAITING) for _ in consumers]
    results, errors = [None] * len(consumers), [None] * len(consumers)
    ended = [False] * len(consumers)        # its queue's end (None) taken

    def batches(k):
        while True:
            batch = queues[k].get()
            if batch is None:
                ended[k] = True
                return
            yield from batch

    def run(k):
        try:
            results[k] = consumers[k](batches(k))
        except BaseException as e:      # noqa: B036 (re-raised in the caller)
            errors[k] = e
        finally:
            while not ended[k]:             # let the reader go on to the end
                ended[k] = queues[k].get() is None

    threads = [threading.Thread(target=run, args=(k,), daemon=True)
               for k in range(len(consumers))]
    for t in threads:
        t.start()
    try:
        batch, size = [], 0
        for ev in events:
            batch.append(ev)
            if getattr(ev, "kind", None) == "output":
                size += len(ev.args.get("data") or b"")
            if len(batch) >= BATCH or size >= BATCH_BYTES:
                for q in queues:
                    q.put(batch)
                batch, size = [], 0
        if batch:
            for q in queues:
                q.put(batch)
    finally:
        for q in queues:
            q.put(None)
        for t in threads:
            t.join()
    for e in errors:
        if e is not None:
            raise e
    return results
