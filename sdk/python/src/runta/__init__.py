"""Python SDK for Runta: isolated runtimes for AI agents.

    from runta import Runta
    with Runta() as runta:
        rt = runta.runtimes.create("worker", vcpus=2, memory_mib=2048)
        print(rt.exec("uname -a").stdout_text)
        cp = rt.checkpoints.create("worker-ready")   # save its files
        fork = runta.runtimes.create("worker-2", checkpoint_id=cp)
        rt.delete()

``AsyncRunta`` offers the same classes and method names for asyncio.
"""

from ._async import (
    AsyncAudits,
    AsyncCheckpoint,
    AsyncCheckpoints,
    AsyncEgress,
    AsyncExecTask,
    AsyncFiles,
    AsyncRunta,
    AsyncRuntime,
    AsyncRuntimeAudits,
    AsyncRuntimeCheckpoints,
    AsyncRuntimes,
    AsyncSession,
)
from ._common import Page
from ._errors import (
    AlreadyExistsError,
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    ConflictError,
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    ResourceExhaustedError,
    RuntaError,
    RuntimeFailedError,
    UnavailableError,
    UnimplementedError,
    WaitTimeoutError,
)
from ._models import (
    Audit,
    CheckpointInfo,
    EgressPolicy,
    Event,
    ExecResult,
    FileEntry,
    Port,
    PublishedPort,
    ResourceRequests,
    Resources,
    ResourceUsage,
    RuntimeInfo,
)
from ._sync import (
    Audits,
    Checkpoint,
    Checkpoints,
    Egress,
    ExecTask,
    Files,
    Runta,
    Runtime,
    RuntimeAudits,
    RuntimeCheckpoints,
    Runtimes,
    Session,
)

__version__ = "0.1.0"

__all__ = [
    "APIConnectionError",
    "APITimeoutError",
    "AlreadyExistsError",
    "AsyncAudits",
    "AsyncCheckpoint",
    "AsyncCheckpoints",
    "AsyncEgress",
    "AsyncExecTask",
    "AsyncFiles",
    "AsyncRunta",
    "AsyncRuntime",
    "AsyncRuntimeAudits",
    "AsyncRuntimeCheckpoints",
    "AsyncRuntimes",
    "AsyncSession",
    "Audit",
    "Audits",
    "AuthenticationError",
    "Checkpoint",
    "CheckpointInfo",
    "Checkpoints",
    "ConflictError",
    "DeadlineExceededError",
    "Egress",
    "EgressPolicy",
    "Event",
    "ExecResult",
    "ExecTask",
    "FailedPreconditionError",
    "FileEntry",
    "Files",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "Page",
    "PermissionDeniedError",
    "Port",
    "PublishedPort",
    "RateLimitedError",
    "ResourceExhaustedError",
    "ResourceRequests",
    "ResourceUsage",
    "Resources",
    "Runta",
    "RuntaError",
    "Runtime",
    "RuntimeAudits",
    "RuntimeCheckpoints",
    "RuntimeFailedError",
    "RuntimeInfo",
    "Runtimes",
    "Session",
    "UnavailableError",
    "UnimplementedError",
    "WaitTimeoutError",
    "__version__",
]
