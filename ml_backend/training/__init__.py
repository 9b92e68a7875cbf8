"""One retraining run, in a process of its own: labels to an Ultralytics dataset (:mod:`.dataset`),
fine-tuning and the run itself (:mod:`.run`), evaluation on held-out labels (:mod:`.evaluate`) and
the promotion rule (:mod:`.promotion`)."""
