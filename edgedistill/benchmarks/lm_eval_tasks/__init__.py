"""lm-evaluation-harness tasks shipped with edgedistill (``benchmarks/lm_eval_bench.py``
loads them): the Python-docs QA set as a log-likelihood task (``pydocs_qa``) and as a
four-way multiple choice (``pydocs_qa_mc``). ``utils.py`` holds their ``!function`` hooks."""
