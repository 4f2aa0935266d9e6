"""The cascade's rankers with their training losses and offline metrics."""
