"""``python -m conformance bench``: how fast each framework runs GoogLeNet, side by side.

:mod:`.settings` what is measured and its checks, :mod:`.results` the figures,
:mod:`.run` the parent that interleaves one process per runtime (:mod:`.worker`),
:mod:`.kernels` the machine's limit, :mod:`.scaling` data-parallel training,
:mod:`.report` the table and JSON, :mod:`.markdown` a Markdown table from that JSON,
:mod:`.command` the command line.
"""
