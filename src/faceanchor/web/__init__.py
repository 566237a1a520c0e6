"""Static web page served at /web/ (nothing imports this package)."""
