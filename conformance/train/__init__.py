"""Training as d2l and Hongpu Liu's lecture train: ``python -m conformance train``.

:mod:`.command` the options, :mod:`.loop` the epochs, :mod:`.settings` what a run is,
:mod:`.dataset` and :mod:`.data` its images, :mod:`.outputs` where it writes,
:mod:`.checkpoints` and :mod:`.state` what it saves and resumes from, :mod:`.plot` its
curves; :mod:`.launch` and :mod:`.worker` run it on N workers.
"""
