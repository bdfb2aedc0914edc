"""Floor 4, the job: loading a model by name, the tiny world, evaluation, rehearsal, exports and the
whoami job that ties them together."""
