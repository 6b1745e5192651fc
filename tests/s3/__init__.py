"""Tests against a real S3 server (SeaweedFS ``weed mini``); they skip where it cannot start."""
