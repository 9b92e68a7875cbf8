"""Active-learning math, pure numpy and faiss: how unsure the model is (:mod:`.uncertainty`), how
unlike the labeled images a task is (:mod:`.diversity`), and the query strategies that turn both
into a queue order (:mod:`.strategies`). Nothing here reads settings, talks HTTP or loads a model."""
