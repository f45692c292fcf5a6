"""Images: wire models, the image store (records, references, Docker's delete rules) and the
parallel streaming puller. Submodules are imported directly (`asyncdock.images.store`, ...)
so that importing the package stays cheap."""
