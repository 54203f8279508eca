"""Search over the index: relations, results, ``find_similar`` / ``check_duplicate`` / ``index_model``."""
