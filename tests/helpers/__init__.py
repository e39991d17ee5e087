"""What several test modules share: servers, fakes, certificates and constants."""
