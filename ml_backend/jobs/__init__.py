"""Background work of the server: label events (:mod:`.label_events`), the scoring queue and worker
(:mod:`.scoring_jobs`), the retraining loop (:mod:`.training_jobs`) and where runs execute
(:mod:`.runners`: a child process or an RQ worker). State lives in ``MODEL_DIR/state.db``."""
