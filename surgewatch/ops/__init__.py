"""Operating SurgeWatch itself: source health, Prometheus metrics and the ops HTTP server."""
