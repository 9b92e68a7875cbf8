"""The label-savings study: the active-learning loop simulated on a labeled dataset (:mod:`.loop`)
and its summary, table and figure (:mod:`.report`)."""
