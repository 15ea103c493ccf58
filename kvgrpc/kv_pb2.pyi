from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReadConsistency(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    READ_CONSISTENCY_UNSPECIFIED: _ClassVar[ReadConsistency]
    READ_CONSISTENCY_EVENTUAL: _ClassVar[ReadConsistency]
    READ_CONSISTENCY_STRONG: _ClassVar[ReadConsistency]
    READ_CONSISTENCY_BOUNDED_STALENESS: _ClassVar[ReadConsistency]

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    EVENT_TYPE_PUT: _ClassVar[EventType]
    EVENT_TYPE_DELETE: _ClassVar[EventType]

class EndpointRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENDPOINT_ROLE_UNSPECIFIED: _ClassVar[EndpointRole]
    ENDPOINT_ROLE_MASTER: _ClassVar[EndpointRole]
    ENDPOINT_ROLE_REPLICA: _ClassVar[EndpointRole]
    ENDPOINT_ROLE_EMBEDDED: _ClassVar[EndpointRole]
READ_CONSISTENCY_UNSPECIFIED: ReadConsistency
READ_CONSISTENCY_EVENTUAL: ReadConsistency
READ_CONSISTENCY_STRONG: ReadConsistency
READ_CONSISTENCY_BOUNDED_STALENESS: ReadConsistency
EVENT_TYPE_UNSPECIFIED: EventType
EVENT_TYPE_PUT: EventType
EVENT_TYPE_DELETE: EventType
ENDPOINT_ROLE_UNSPECIFIED: EndpointRole
ENDPOINT_ROLE_MASTER: EndpointRole
ENDPOINT_ROLE_REPLICA: EndpointRole
ENDPOINT_ROLE_EMBEDDED: EndpointRole

class ReadOptions(_message.Message):
    __slots__ = ("consistency", "max_staleness_ms", "min_write_token")
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    MAX_STALENESS_MS_FIELD_NUMBER: _ClassVar[int]
    MIN_WRITE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    consistency: ReadConsistency
    max_staleness_ms: int
    min_write_token: str
    def __init__(self, consistency: _Optional[_Union[ReadConsistency, str]] = ..., max_staleness_ms: _Optional[int] = ..., min_write_token: _Optional[str] = ...) -> None: ...

class Record(_message.Message):
    __slots__ = ("key", "value", "version")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: bytes
    version: int
    def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ..., version: _Optional[int] = ...) -> None: ...

class PutRequest(_message.Message):
    __slots__ = ("key", "value", "expected_version")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: bytes
    expected_version: int
    def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ..., expected_version: _Optional[int] = ...) -> None: ...

class PutResponse(_message.Message):
    __slots__ = ("version", "write_token", "revision")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WRITE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    version: int
    write_token: str
    revision: int
    def __init__(self, version: _Optional[int] = ..., write_token: _Optional[str] = ..., revision: _Optional[int] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("key", "read_options")
    KEY_FIELD_NUMBER: _ClassVar[int]
    READ_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    key: str
    read_options: ReadOptions
    def __init__(self, key: _Optional[str] = ..., read_options: _Optional[_Union[ReadOptions, _Mapping]] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("record",)
    RECORD_FIELD_NUMBER: _ClassVar[int]
    record: Record
    def __init__(self, record: _Optional[_Union[Record, _Mapping]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted", "write_token", "revision")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    WRITE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    write_token: str
    revision: int
    def __init__(self, deleted: _Optional[bool] = ..., write_token: _Optional[str] = ..., revision: _Optional[int] = ...) -> None: ...

class BatchGetRequest(_message.Message):
    __slots__ = ("keys", "read_options")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    READ_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    read_options: ReadOptions
    def __init__(self, keys: _Optional[_Iterable[str]] = ..., read_options: _Optional[_Union[ReadOptions, _Mapping]] = ...) -> None: ...

class BatchGetResponse(_message.Message):
    __slots__ = ("records", "missing_keys", "unprocessed_keys")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    MISSING_KEYS_FIELD_NUMBER: _ClassVar[int]
    UNPROCESSED_KEYS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[Record]
    missing_keys: _containers.RepeatedScalarFieldContainer[str]
    unprocessed_keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, records: _Optional[_Iterable[_Union[Record, _Mapping]]] = ..., missing_keys: _Optional[_Iterable[str]] = ..., unprocessed_keys: _Optional[_Iterable[str]] = ...) -> None: ...

class StreamPutRequest(_message.Message):
    __slots__ = ("records", "load_id", "start_index")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    LOAD_ID_FIELD_NUMBER: _ClassVar[int]
    START_INDEX_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[KeyValuePair]
    load_id: str
    start_index: int
    def __init__(self, records: _Optional[_Iterable[_Union[KeyValuePair, _Mapping]]] = ..., load_id: _Optional[str] = ..., start_index: _Optional[int] = ...) -> None: ...

class KeyValuePair(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: bytes
    def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...

class StreamPutResponse(_message.Message):
    __slots__ = ("committed_count", "write_token", "revision", "skipped_count", "load_committed_count")
    COMMITTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    WRITE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_COUNT_FIELD_NUMBER: _ClassVar[int]
    LOAD_COMMITTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    committed_count: int
    write_token: str
    revision: int
    skipped_count: int
    load_committed_count: int
    def __init__(self, committed_count: _Optional[int] = ..., write_token: _Optional[str] = ..., revision: _Optional[int] = ..., skipped_count: _Optional[int] = ..., load_committed_count: _Optional[int] = ...) -> None: ...

class ScanRequest(_message.Message):
    __slots__ = ("prefix", "start_key", "end_key", "page_size", "page_bytes", "page_token", "keys_only", "read_options")
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    START_KEY_FIELD_NUMBER: _ClassVar[int]
    END_KEY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    KEYS_ONLY_FIELD_NUMBER: _ClassVar[int]
    READ_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    start_key: str
    end_key: str
    page_size: int
    page_bytes: int
    page_token: str
    keys_only: bool
    read_options: ReadOptions
    def __init__(self, prefix: _Optional[str] = ..., start_key: _Optional[str] = ..., end_key: _Optional[str] = ..., page_size: _Optional[int] = ..., page_bytes: _Optional[int] = ..., page_token: _Optional[str] = ..., keys_only: _Optional[bool] = ..., read_options: _Optional[_Union[ReadOptions, _Mapping]] = ...) -> None: ...

class ScanResponse(_message.Message):
    __slots__ = ("records", "next_page_token")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[Record]
    next_page_token: str
    def __init__(self, records: _Optional[_Iterable[_Union[Record, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("key", "prefix", "start_revision")
    KEY_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    START_REVISION_FIELD_NUMBER: _ClassVar[int]
    key: str
    prefix: str
    start_revision: int
    def __init__(self, key: _Optional[str] = ..., prefix: _Optional[str] = ..., start_revision: _Optional[int] = ...) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ("created", "events", "revision")
    CREATED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    created: bool
    events: _containers.RepeatedCompositeFieldContainer[Event]
    revision: int
    def __init__(self, created: _Optional[bool] = ..., events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., revision: _Optional[int] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("type", "record", "revision")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    type: EventType
    record: Record
    revision: int
    def __init__(self, type: _Optional[_Union[EventType, str]] = ..., record: _Optional[_Union[Record, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("endpoints", "limits", "server")
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    endpoints: _containers.RepeatedCompositeFieldContainer[EndpointStatus]
    limits: ServerLimits
    server: ServerInfo
    def __init__(self, endpoints: _Optional[_Iterable[_Union[EndpointStatus, _Mapping]]] = ..., limits: _Optional[_Union[ServerLimits, _Mapping]] = ..., server: _Optional[_Union[ServerInfo, _Mapping]] = ...) -> None: ...

class ServerLimits(_message.Message):
    __slots__ = ("max_key_bytes", "max_value_bytes", "max_receive_message_bytes", "max_send_message_bytes", "max_batch_get_keys", "max_batch_get_bytes", "max_scan_page_size", "max_scan_page_bytes")
    MAX_KEY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_VALUE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_RECEIVE_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_SEND_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_GET_KEYS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_GET_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_SCAN_PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_SCAN_PAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    max_key_bytes: int
    max_value_bytes: int
    max_receive_message_bytes: int
    max_send_message_bytes: int
    max_batch_get_keys: int
    max_batch_get_bytes: int
    max_scan_page_size: int
    max_scan_page_bytes: int
    def __init__(self, max_key_bytes: _Optional[int] = ..., max_value_bytes: _Optional[int] = ..., max_receive_message_bytes: _Optional[int] = ..., max_send_message_bytes: _Optional[int] = ..., max_batch_get_keys: _Optional[int] = ..., max_batch_get_bytes: _Optional[int] = ..., max_scan_page_size: _Optional[int] = ..., max_scan_page_bytes: _Optional[int] = ...) -> None: ...

class ServerInfo(_message.Message):
    __slots__ = ("version", "process_id")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PROCESS_ID_FIELD_NUMBER: _ClassVar[int]
    version: str
    process_id: int
    def __init__(self, version: _Optional[str] = ..., process_id: _Optional[int] = ...) -> None: ...

class GetLoadRequest(_message.Message):
    __slots__ = ("load_id",)
    LOAD_ID_FIELD_NUMBER: _ClassVar[int]
    load_id: str
    def __init__(self, load_id: _Optional[str] = ...) -> None: ...

class GetLoadResponse(_message.Message):
    __slots__ = ("load_id", "committed_count", "revision", "write_token", "updated_unix_ms")
    LOAD_ID_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    WRITE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    UPDATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    load_id: str
    committed_count: int
    revision: int
    write_token: str
    updated_unix_ms: int
    def __init__(self, load_id: _Optional[str] = ..., committed_count: _Optional[int] = ..., revision: _Optional[int] = ..., write_token: _Optional[str] = ..., updated_unix_ms: _Optional[int] = ...) -> None: ...

class EndpointStatus(_message.Message):
    __slots__ = ("name", "role", "reachable", "healthy", "lag_ms", "pool_in_use", "pool_size", "semi_sync_active", "problem")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    LAG_MS_FIELD_NUMBER: _ClassVar[int]
    POOL_IN_USE_FIELD_NUMBER: _ClassVar[int]
    POOL_SIZE_FIELD_NUMBER: _ClassVar[int]
    SEMI_SYNC_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: EndpointRole
    reachable: bool
    healthy: bool
    lag_ms: int
    pool_in_use: int
    pool_size: int
    semi_sync_active: bool
    problem: str
    def __init__(self, name: _Optional[str] = ..., role: _Optional[_Union[EndpointRole, str]] = ..., reachable: _Optional[bool] = ..., healthy: _Optional[bool] = ..., lag_ms: _Optional[int] = ..., pool_in_use: _Optional[int] = ..., pool_size: _Optional[int] = ..., semi_sync_active: _Optional[bool] = ..., problem: _Optional[str] = ...) -> None: ...
