"""Reports for people: the weekly digest, the post-event review and their charts."""
