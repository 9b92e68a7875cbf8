"""Tools apart from the runtime: the offline demo, benchmarks, the load test, the label-savings
study, dataset readers and generators, starter-model training. The server, the jobs and the
training runs never import anything from here."""
