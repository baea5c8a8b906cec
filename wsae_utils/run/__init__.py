"""Running the workflow: config validation, config-file guard, notebook runner, results and index, plots."""
