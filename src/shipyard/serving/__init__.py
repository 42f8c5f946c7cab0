"""The three serving surfaces over one core path (online today; batch and stream next)."""
