"""Serving the model: weights and versions (:mod:`.model`, :mod:`.versions`, :mod:`.served_models`),
images (:mod:`.images`), the labeling config (:mod:`.label_config`), and predictions for tasks
converted to Label Studio regions (:mod:`.predictor`, :mod:`.ls_results`)."""
