"""Stage 4: secrets. The leak guard, the sops adapter, age keys and the no-churn reconcile policy."""
