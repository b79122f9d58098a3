"""What a metadata change can fail with, for the handlers that ask for one."""


class MetadataWriteFailed(Exception):
    """The change was not made durable, not applied, and the metadata log is
    back where it was: the request is answered with KAFKA_STORAGE_ERROR."""


class MetadataLogFatal(Exception):
    """The metadata log may hold records the image lacks and could not be cut
    back -- the state Kafka's controller treats as fatal.  Raised in the
    broker's nursery, it stops the broker; the process exits non-zero with
    this reason as its one line on stderr."""
