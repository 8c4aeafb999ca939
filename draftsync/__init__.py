"""draftsync: back up the videos a phone syncs to a home server, and push new ones to TikTok as drafts."""

__version__ = "0.1.0"
