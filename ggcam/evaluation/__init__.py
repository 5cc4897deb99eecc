"""Can the explanations be trusted: sanity checks and faithfulness scores (``checks``) over the metrics (``metrics``)."""
