"""construct building blocks for Kafka's wire types.

Kafka messages are made of a handful of primitive types (fixed-width
big-endian integers, unsigned varints, int16/int32 or varint length-prefixed
strings, bytes and arrays, a 16-byte uuid) and, in *flexible* versions
(KIP-482), a tagged-field section at the end of every struct.  Each of those
is a small :class:`construct.Construct` subclass here; the generated message
tables in :mod:`protocol.messages` are turned into trees of them by
:mod:`protocol.schema`.

Why custom classes instead of construct's stock ``Struct``/``PrefixedArray``:
Kafka needs null-able strings/arrays (length -1 or compact 0), strict bounds
(a count must not promise more elements than there are bytes, so a hostile
frame cannot make us allocate), and one exception type carrying the field
path and byte offset.  Each class here still speaks construct's
``_parse``/``_build`` protocol, so ``con.parse(data)`` and ``con.build(obj)``
work as usual.

Decoding reads from :class:`BufferReader`, a tiny stream over a
``memoryview``: reads are slices, never copies, so a ``records`` field of a
Produce request is a view into the request frame (which the broker can patch
in place).  Encoding writes to :class:`ChunkWriter`, which keeps large
buffers (record batches) by reference so a Fetch response can be sent with
``sendmsg`` without ever being joined.
"""

from __future__ import annotations

import struct
import uuid as _uuid

import construct

from .errors import ProtocolError, TooManyElements

__all__ = [
    "BufferReader",
    "ChunkWriter",
    "Fixed",
    "UVarint",
    "String",
    "Bytes",
    "Array",
    "Uuid",
    "KStruct",
    "TaggedField",
    "EncodedElements",
    "SplicedElements",
    "INT8",
    "INT16",
    "UINT16",
    "INT32",
    "UINT32",
    "INT64",
    "FLOAT64",
    "BOOL",
    "UUID",
    "read_uvarint",
    "write_uvarint",
]


class BufferReader:
    """A read-only stream over a buffer whose ``read`` returns zero-copy views."""

    __slots__ = ("view", "pos", "end", "elements_left")

    def __init__(self, data, pos: int = 0, end: int | None = None, max_elements: int | None = None):
        # Array elements this message may still hold (None: no budget).  The
        # per-array "count <= bytes left" check bounds allocation by the frame
        # size, but an element can cost a hundred times its one wire byte in
        # Python objects and decode time, so a server sets a budget as well.
        self.elements_left = max_elements
        self.view = data if isinstance(data, memoryview) else memoryview(data)
        if self.view.format != "B" or self.view.ndim != 1:
            self.view = self.view.cast("B")
        self.pos = pos
        self.end = len(self.view) if end is None else end

    def read(self, n: int) -> memoryview:
        pos = self.pos
        if n < 0 or pos + n > self.end:
            raise ProtocolError(
                f"needed {n} bytes at offset {pos} but only {self.end - pos} remain"
            )
        self.pos = pos + n
        return self.view[pos : pos + n]

    def remaining(self) -> int:
        return self.end - self.pos

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = pos if whence == 0 else (self.pos + pos if whence == 1 else self.end + pos)
        return self.pos


class ChunkWriter:
    """A write-only stream that keeps big buffers by reference.

    Small writes are coalesced into a bytearray; a buffer of at least
    ``BIG`` bytes becomes its own chunk without being copied.  ``chunks()``
    gives the list (for scatter/gather sends), ``getvalue()`` joins it.
    """

    BIG = 4096
    __slots__ = ("_chunks", "_small", "size")

    def __init__(self):
        self._chunks: list = []
        self._small = bytearray()
        self.size = 0

    def write(self, data) -> int:
        n = len(data)
        if n >= self.BIG:
            if self._small:
                self._chunks.append(self._small)
                self._small = bytearray()
            self._chunks.append(data)
        else:
            self._small += data
        self.size += n
        return n

    def chunks(self) -> list:
        if self._small:
            self._chunks.append(self._small)
            self._small = bytearray()
        return self._chunks

    def getvalue(self) -> bytes:
        return b"".join(self.chunks())

    def tell(self) -> int:
        return self.size


def _remaining(stream) -> int:
    if isinstance(stream, BufferReader):
        return stream.end - stream.pos
    # Plain file-like streams (construct's own ``parse`` uses BytesIO).
    try:
        buf = stream.getbuffer()
        return len(buf) - stream.tell()
    except (AttributeError, ValueError):
        return 1 << 62


def _read(stream, n: int):
    if isinstance(stream, BufferReader):
        return stream.read(n)
    data = stream.read(n)
    if len(data) != n:
        raise ProtocolError(f"needed {n} bytes but only {len(data)} remain")
    return data


def _offset(stream) -> int:
    try:
        return stream.tell()
    except Exception:  # pragma: no cover - exotic streams
        return -1


class Fixed(construct.Construct):
    """A fixed-width big-endian number (``struct`` format)."""

    def __init__(self, fmt: str, kafka_type: str):
        super().__init__()
        self._struct = struct.Struct(fmt)
        self._size = self._struct.size
        self.kafka_type = kafka_type
        self.default = False if kafka_type == "bool" else (0.0 if kafka_type == "float64" else 0)

    def _parse(self, stream, context, path):
        return self._struct.unpack(_read(stream, self._size))[0]

    def _build(self, obj, stream, context, path):
        try:
            stream.write(self._struct.pack(obj))
        except (struct.error, TypeError) as e:
            raise ProtocolError(f"cannot encode {obj!r} as {self.kafka_type}: {e}") from None
        return obj

    def _sizeof(self, context, path):
        return self._size


class _Bool(Fixed):
    def _parse(self, stream, context, path):
        return _read(stream, 1)[0] != 0

    def _build(self, obj, stream, context, path):
        if not isinstance(obj, (bool, int)):
            raise ProtocolError(f"cannot encode {obj!r} as bool")
        stream.write(b"\x01" if obj else b"\x00")
        return obj


INT8 = Fixed(">b", "int8")
INT16 = Fixed(">h", "int16")
UINT16 = Fixed(">H", "uint16")
INT32 = Fixed(">i", "int32")
UINT32 = Fixed(">I", "uint32")
INT64 = Fixed(">q", "int64")
FLOAT64 = Fixed(">d", "float64")
BOOL = _Bool(">?", "bool")

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


def read_uvarint(stream, max_bytes: int = 5) -> int:
    """An unsigned LEB128 varint of at most ``max_bytes`` bytes (5 for 32 bits)."""
    result = 0
    shift = 0
    for _ in range(max_bytes):
        b = _read(stream, 1)[0]
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result
        shift += 7
    raise ProtocolError(f"varint longer than {max_bytes} bytes at offset {_offset(stream) - max_bytes}")


def write_uvarint(value: int) -> bytes:
    if value < 0:
        raise ProtocolError(f"cannot encode negative {value} as an unsigned varint")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_UVARINT_CACHE = [write_uvarint(i) for i in range(256)]


def _uvarint_bytes(value: int) -> bytes:
    if 0 <= value < 256:
        return _UVARINT_CACHE[value]
    return write_uvarint(value)


class UVarint(construct.Construct):
    """Kafka's unsigned varint (32-bit)."""

    kafka_type = "uvarint"
    default = 0

    def _parse(self, stream, context, path):
        return read_uvarint(stream)

    def _build(self, obj, stream, context, path):
        if not isinstance(obj, int) or obj > 0xFFFFFFFF:
            raise ProtocolError(f"cannot encode {obj!r} as an unsigned varint")
        stream.write(_uvarint_bytes(obj))
        return obj


def _read_length(stream, compact: bool, nullable: bool, what: str, classic_width: int):
    """Read a length prefix; returns None for null.  Checks against remaining bytes."""
    if compact:
        n = read_uvarint(stream) - 1
    elif classic_width == 2:
        n = _I16.unpack(_read(stream, 2))[0]
    else:
        n = _I32.unpack(_read(stream, 4))[0]
    if n < 0:
        if n == -1 and nullable:
            return None
        if n == -1:
            raise ProtocolError(f"null {what} where the field is not nullable")
        raise ProtocolError(f"negative {what} length {n}")
    return n


def _write_length(stream, n: int | None, compact: bool, classic_width: int):
    if compact:
        stream.write(_uvarint_bytes(0 if n is None else n + 1))
    elif classic_width == 2:
        stream.write(_I16.pack(-1 if n is None else n))
    else:
        stream.write(_I32.pack(-1 if n is None else n))


class String(construct.Construct):
    """UTF-8 string: int16 length (classic) or uvarint length+1 (compact)."""

    kafka_type = "string"

    def __init__(self, compact: bool, nullable: bool):
        super().__init__()
        self.compact = compact
        self.nullable = nullable
        self.default = ""

    def _parse(self, stream, context, path):
        n = _read_length(stream, self.compact, self.nullable, "string", 2)
        if n is None:
            return None
        if n > _remaining(stream):
            raise ProtocolError(f"string length {n} exceeds the {_remaining(stream)} bytes left")
        data = _read(stream, n)
        try:
            return str(data, "utf-8")
        except UnicodeDecodeError as e:
            raise ProtocolError(f"string is not valid UTF-8 ({e.reason} at byte {e.start})") from None

    def _build(self, obj, stream, context, path):
        if obj is None:
            if not self.nullable:
                raise ProtocolError("None for a non-nullable string")
            _write_length(stream, None, self.compact, 2)
            return obj
        if not isinstance(obj, str):
            raise ProtocolError(f"expected a str, got {type(obj).__name__}")
        try:
            data = obj.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ProtocolError(f"string is not encodable as UTF-8 ({e.reason} at {e.start})") from None
        if not self.compact and len(data) > 0x7FFF:
            raise ProtocolError(f"string of {len(data)} bytes is too long for an int16 length")
        _write_length(stream, len(data), self.compact, 2)
        stream.write(data)
        return obj


class Bytes(construct.Construct):
    """Bytes: int32 length (classic) or uvarint length+1 (compact).

    ``zero_copy`` (used for ``records``) returns a memoryview into the frame
    instead of a bytes copy.
    """

    kafka_type = "bytes"

    def __init__(self, compact: bool, nullable: bool, zero_copy: bool = False):
        super().__init__()
        self.compact = compact
        self.nullable = nullable
        self.zero_copy = zero_copy
        self.default = b""

    def _parse(self, stream, context, path):
        n = _read_length(stream, self.compact, self.nullable, "bytes", 4)
        if n is None:
            return None
        if n > _remaining(stream):
            raise ProtocolError(f"bytes length {n} exceeds the {_remaining(stream)} bytes left")
        data = _read(stream, n)
        return data if self.zero_copy else bytes(data)

    def _build(self, obj, stream, context, path):
        if obj is None:
            if not self.nullable:
                raise ProtocolError("None for a non-nullable bytes field")
            _write_length(stream, None, self.compact, 4)
            return obj
        if isinstance(obj, (list, tuple)):
            # Scatter/gather: a sequence of buffers written back to back.
            parts = [_byte_buffer(b) for b in obj]
            _write_length(stream, sum(len(b) for b in parts), self.compact, 4)
            for b in parts:
                stream.write(b)
            return obj
        data = _byte_buffer(obj)
        _write_length(stream, len(data), self.compact, 4)
        stream.write(data)
        return obj


def _byte_buffer(obj):
    """``obj`` as a buffer whose len() is its size in bytes.

    The writer counts ``len()``; for an ``array('I')`` or a typed memoryview
    that is the item count, which would make the frame's size prefix wrong.
    """
    if isinstance(obj, (bytes, bytearray)):
        return obj
    try:
        view = memoryview(obj)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
    except TypeError:
        raise ProtocolError(f"expected bytes, got {type(obj).__name__}") from None
    return view


class Uuid(construct.Construct):
    """A 16-byte uuid, as :class:`uuid.UUID`."""

    kafka_type = "uuid"
    default = _uuid.UUID(int=0)

    def _parse(self, stream, context, path):
        return _uuid.UUID(bytes=bytes(_read(stream, 16)))

    def _build(self, obj, stream, context, path):
        if isinstance(obj, _uuid.UUID):
            stream.write(obj.bytes)
        elif isinstance(obj, (bytes, bytearray)) and len(obj) == 16:
            stream.write(bytes(obj))
        elif isinstance(obj, str):
            try:
                stream.write(_uuid.UUID(obj).bytes)
            except ValueError:
                raise ProtocolError(f"not a uuid: {obj!r}") from None
        else:
            raise ProtocolError(f"cannot encode {obj!r} as a uuid")
        return obj


UUID = Uuid()


class EncodedElements:
    """Array elements encoded ahead of time, to be written into a message as they are.

    A server often answers the same entries again and again (Metadata lists
    every topic to every client, and the topics change far less often than
    clients ask).  Encoding those entries once and splicing the bytes into
    each answer turns a per-field Python walk into one buffer write.

    The bytes are only meaningful for one layout: the element construct of one
    array field in one version of one message.  ``element`` remembers that
    construct, and :class:`Array` refuses elements encoded for any other
    (another version, or another field), so a cache keyed wrongly fails loudly
    instead of sending a misframed answer.  Build instances with
    :meth:`protocol.schema.Message.encode_elements`, which takes the element
    construct from the generated schema; combine them with :meth:`concat`.
    """

    __slots__ = ("element", "count", "data")

    def __init__(self, element: construct.Construct, count: int, data: bytes):
        self.element = element
        self.count = count
        self.data = data

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return f"<EncodedElements {self.count} elements, {len(self.data)} bytes>"

    @classmethod
    def concat(cls, element: construct.Construct, parts) -> "EncodedElements":
        """One run of elements from several, in order (all for ``element``)."""
        parts = list(parts)
        for p in parts:
            if p.element is not element:
                raise ProtocolError("cannot join elements encoded for different layouts")
        return cls(element, sum(p.count for p in parts), b"".join(p.data for p in parts))


class SplicedElements(list):
    """A list of array elements in which an :class:`EncodedElements` stands for the elements it holds.

    For answers that are partly cached and partly fresh (Metadata naming some
    known topics and some unknown ones): the fresh entries stay plain values
    and are encoded with the rest of the message, wherever that happens (a
    server may encode a large answer off its event loop).
    """

    __slots__ = ()


class Array(construct.Construct):
    """An array: int32 count (classic) or uvarint count+1 (compact).

    Besides a list, encoding accepts :class:`EncodedElements` made for this
    array's element construct (the count is written, then the bytes as they
    are) and a :class:`SplicedElements` list mixing them with plain values.
    """

    kafka_type = "array"

    def __init__(self, element: construct.Construct, compact: bool, nullable: bool):
        super().__init__()
        self.element = element
        self.compact = compact
        self.nullable = nullable

    def _parse(self, stream, context, path):
        n = _read_length(stream, self.compact, self.nullable, "array", 4)
        if n is None:
            return None
        # Every element takes at least one byte on the wire, so a count larger
        # than what is left is a lie: refuse it before allocating anything.
        if n > _remaining(stream):
            raise ProtocolError(f"array count {n} exceeds the {_remaining(stream)} bytes left")
        budget = getattr(stream, "elements_left", None)
        if budget is not None:
            if n > budget:
                raise TooManyElements(f"the message holds more array elements than the limit allows ({n} > {budget} left)")
            stream.elements_left = budget - n
        parse = self.element._parse
        out = []
        append = out.append
        i = 0
        try:
            for i in range(n):
                append(parse(stream, context, path))
        except ProtocolError as e:
            e.path.insert(0, f"[{i}]")
            raise
        return out

    def _build(self, obj, stream, context, path):
        if obj is None:
            if not self.nullable:
                raise ProtocolError("None for a non-nullable array")
            _write_length(stream, None, self.compact, 4)
            return obj
        if type(obj) is EncodedElements:
            if obj.element is not self.element:
                raise ProtocolError("pre-encoded elements were made for another layout (version or field)")
            _write_length(stream, obj.count, self.compact, 4)
            stream.write(obj.data)
            return obj
        if type(obj) is SplicedElements:
            self._build_spliced(obj, stream, context, path)
            return obj
        if isinstance(obj, (str, bytes, dict)) or not hasattr(obj, "__len__"):
            raise ProtocolError(f"expected a list, got {type(obj).__name__}")
        _write_length(stream, len(obj), self.compact, 4)
        build = self.element._build
        i = 0
        try:
            for i, item in enumerate(obj):
                build(item, stream, context, path)
        except ProtocolError as e:
            e.path.insert(0, f"[{i}]")
            raise
        return obj


    def _build_spliced(self, obj, stream, context, path):
        element = self.element
        count = 0
        for item in obj:
            if type(item) is EncodedElements:
                if item.element is not element:
                    raise ProtocolError("pre-encoded elements were made for another layout (version or field)")
                count += item.count
            else:
                count += 1
        _write_length(stream, count, self.compact, 4)
        build = element._build
        i = 0
        try:
            for i, item in enumerate(obj):
                if type(item) is EncodedElements:
                    stream.write(item.data)
                else:
                    build(item, stream, context, path)
        except ProtocolError as e:
            e.path.insert(0, f"[{i}]")
            raise


class TaggedField:
    """How one tagged field is read and written inside a tagged section."""

    __slots__ = ("name", "tag", "con", "default", "is_default")

    def __init__(self, name, tag, con, default, is_default):
        self.name = name
        self.tag = tag
        self.con = con
        self.default = default  # a factory
        self.is_default = is_default  # value -> bool


_MISSING = object()

UNKNOWN_TAGS = "_unknown_tagged_fields"
"""Key under which a decoded struct keeps tagged fields it does not know
(a dict of tag -> raw bytes); they are written back unchanged on encode."""


class KStruct(construct.Construct):
    """A Kafka struct in one particular version.

    ``fields`` are ``(name, construct)`` in wire order.  ``absent`` describes
    the fields the struct has in *other* versions: ``name -> (default factory,
    ignorable)``; decoding fills them with their defaults so a body looks the
    same whatever version it came in, and encoding refuses a non-default value
    for one unless Kafka marks it ignorable.  ``tagged`` (flexible versions
    only) lists the tagged fields by tag; ``flexible`` adds the tagged section.
    """

    kafka_type = "struct"

    def __init__(self, name, fields, absent, tagged, flexible, container=construct.Container):
        super().__init__()
        self.struct_name = name
        self.fields = list(fields)
        self.absent = dict(absent)
        self.tagged = {t.tag: t for t in tagged}
        self.tagged_by_name = {t.name: t for t in tagged}
        self.flexible = flexible
        self.container = container
        self.known = {n for n, _ in self.fields} | set(self.tagged_by_name) | set(self.absent)
        self._absent_defaults = [(n, d) for n, (d, _) in self.absent.items()]

    # -- parsing ---------------------------------------------------------
    def _parse(self, stream, context, path):
        obj = self.container()
        name = None
        try:
            for name, con in self.fields:
                obj[name] = con._parse(stream, context, path)
            if self.flexible:
                name = "(tagged fields)"
                self._parse_tagged(obj, stream, context, path)
        except ProtocolError as e:
            e.path.insert(0, name)
            raise
        for n, factory in self._absent_defaults:
            obj[n] = factory()
        return obj

    def _parse_tagged(self, obj, stream, context, path):
        count = read_uvarint(stream)
        if count > _remaining(stream):
            raise ProtocolError(f"tagged field count {count} exceeds the bytes left")
        budget = getattr(stream, "elements_left", None)
        if budget is not None and count:
            if count > budget:
                raise TooManyElements(f"the message holds more elements than the limit allows ({count} tagged fields > {budget} left)")
            stream.elements_left = budget - count
        seen = -1
        unknown = None
        for _ in range(count):
            tag = read_uvarint(stream)
            if tag <= seen:
                raise ProtocolError(f"tagged field {tag} out of order or repeated")
            seen = tag
            size = read_uvarint(stream)
            data = _read(stream, size)
            tf = self.tagged.get(tag)
            if tf is None:
                if unknown is None:
                    unknown = {}
                unknown[tag] = bytes(data)
                continue
            sub = BufferReader(data)
            try:
                obj[tf.name] = tf.con._parse(sub, context, path)
            except ProtocolError as e:
                e.path.insert(0, tf.name)
                raise
            if sub.pos != sub.end:
                raise ProtocolError(f"tagged field {tf.name} has {sub.end - sub.pos} trailing bytes")
        for tf in self.tagged.values():
            if tf.name not in obj:
                obj[tf.name] = tf.default()
        if unknown:
            obj[UNKNOWN_TAGS] = unknown

    # -- building --------------------------------------------------------
    def _build(self, obj, stream, context, path):
        if obj is None:
            obj = {}
        elif not hasattr(obj, "get"):
            raise ProtocolError(f"{self.struct_name}: expected a mapping, got {type(obj).__name__}")
        name = None
        try:
            for key in obj:
                if key not in self.known and key != UNKNOWN_TAGS:
                    raise ProtocolError(f"{self.struct_name} has no field {key!r}")
            for name, con in self.fields:
                value = obj.get(name, _MISSING)
                if value is _MISSING:
                    value = self._default_for(name, con)
                con._build(value, stream, context, path)
            name = None
            for key, (factory, ignorable) in self.absent.items():
                value = obj.get(key, _MISSING)
                if value is _MISSING or ignorable:
                    continue
                if value != factory():
                    raise ProtocolError(
                        f"{self.struct_name}.{key} is not in this version and cannot carry "
                        f"the non-default value {value!r}"
                    )
            if self.flexible:
                name = "(tagged fields)"
                self._build_tagged(obj, stream, context, path)
        except ProtocolError as e:
            if name is not None:
                e.path.insert(0, name)
            raise
        return obj

    def _default_for(self, name, con):
        factory = getattr(con, "default_factory", None)
        if factory is not None:
            return factory()
        return getattr(con, "default", None)

    def _build_tagged(self, obj, stream, context, path):
        items = []
        for tag, tf in self.tagged.items():
            value = obj.get(tf.name, _MISSING)
            # A tagged field that holds its default is left out: that is what
            # Kafka does, and old librdkafka cannot parse it otherwise.
            if value is _MISSING or tf.is_default(value):
                continue
            sub = ChunkWriter()
            try:
                tf.con._build(value, sub, context, path)
            except ProtocolError as e:
                e.path.insert(0, tf.name)
                raise
            items.append((tag, sub.getvalue()))
        unknown = obj.get(UNKNOWN_TAGS)
        if unknown:
            items.extend((t, bytes(v)) for t, v in unknown.items() if t not in self.tagged)
            items.sort(key=lambda x: x[0])
        out = bytearray(_uvarint_bytes(len(items)))
        for tag, data in items:
            out += _uvarint_bytes(tag)
            out += _uvarint_bytes(len(data))
            out += data
        stream.write(out)
