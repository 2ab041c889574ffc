"""Every variant judged against the reference: the logit comparison, the validation run and its report."""
