"""Attachments: the blob stores, the attachments catalog, images, collection (docs/media.md)."""
