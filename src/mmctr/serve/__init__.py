"""``mmctr serve``: a trained run behind HTTP, for a ranking service to call.

The pieces: ``settings`` (limits and where to listen, the loaded run and its id), ``checks``
(what a request may hold, refused with the field named), ``batcher`` (concurrent requests
scored in one forward pass on a worker thread, within a bound on rows and a deadline),
``admission`` (the 503 answers), ``worker`` and ``supervisor`` (the model process, watched
and replaced), ``reload`` (another run, or the same re-read, switched in between batches),
``metrics`` (Prometheus counters and the body size limit) and ``app`` (the
FastAPI routes). FastAPI, uvicorn and prometheus-client come with
the ``serve`` extra; importing this package alone needs none of them.
"""
