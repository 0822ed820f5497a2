"""A CSV of devices from an HTTP request to an import report: the one flow behind
``POST /api/v1/devices/import`` and the onboarding page's upload."""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import UploadFile

from api.auth import UserContext
from api.deps import actor_for
from api.pool import Pool
from carewatch import fleet
from carewatch.device_broker import DeviceBroker
from carewatch.fleet import ImportReport
from devices.device_specs import MAX_IMPORT_BYTES, ImportFileError, parse_csv

# A multipart envelope around a file of the largest size is this much larger than the file.
_MULTIPART_OVERHEAD_BYTES = 64 * 1024


async def import_devices(
    request: Request, pool: Pool, user: UserContext, device_mqtt: DeviceBroker
) -> ImportReport:
    """Read, parse and create the devices of the uploaded CSV, row by row.

    Raises :class:`ImportFileError` for a file that cannot be read as a whole (``too_large``
    beyond the size limit); a bad row is refused in the report, never the file.
    """
    specs, refused = parse_csv(await read_upload(request))
    async with pool.connection() as conn:
        return await fleet.create_devices(
            conn, actor_for(user, request), specs, device_mqtt, refused=refused, note="import"
        )


async def read_upload(request: Request) -> bytes:
    """The CSV bytes of a multipart ``file`` field or of the raw body, read no further than
    the size limit."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_IMPORT_BYTES + _MULTIPART_OVERHEAD_BYTES:
        raise _too_large()
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        async with request.form(max_files=1, max_fields=10) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise ImportFileError("no file in the field 'file'")
            data = await upload.read(MAX_IMPORT_BYTES + 1)
    else:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_IMPORT_BYTES:
                raise _too_large()
            chunks.append(chunk)
        data = b"".join(chunks)
    if len(data) > MAX_IMPORT_BYTES:
        raise _too_large()
    if b"\x00" in data:
        # No CSV text holds one, and PostgreSQL could not store it: refuse the file as such.
        raise ImportFileError("the file has a NUL byte: not a text (CSV) file")
    return data


def _too_large() -> ImportFileError:
    return ImportFileError(
        f"file larger than {MAX_IMPORT_BYTES // (1024 * 1024)} MB", too_large=True
    )
