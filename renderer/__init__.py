"""The stateless renderer: render requests in, H.264 MP4 streams out."""
