"""The parts of bench/serve_load.py, the load test of `mmctr serve` (see its docstring).

``procs``: start the server, read its memory and CPU from /proc; ``bodies``: seeded request
bodies, valid and malformed; ``client``: send them and time them, and the in-process reference;
``report``: the JSON report. The other modes (``modes``): ``openloop``, requests at a fixed
rate whatever the answers; ``capacity``, closed-loop measures for them; ``overload``,
``faultmode`` (with ``faults``: stopping and killing the model process) and ``reloadmode``.
"""
