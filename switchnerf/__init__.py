"""switchnerf."""
