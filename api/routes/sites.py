"""``/api/v1/sites``: the caller's sites; admins add sites to their organisation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status

from api import queries
from api.auth import Role, UserContext
from api.deps import CurrentUser, PoolDep, require_roles
from api.schemas import SiteCreate, SitePublic

router = APIRouter(prefix="/api/v1/sites", tags=["sites"])

AdminUser = Annotated[UserContext, Depends(require_roles(Role.ADMIN))]


@router.get("")
async def list_sites(user: CurrentUser, pool: PoolDep) -> list[SitePublic]:
    """The sites the caller may see: all of the organisation's, or the ones they are given."""
    return await queries.list_sites(pool, user)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={403: {"description": "not an admin"}, 409: {"description": "the id is taken"}},
)
async def create_site(site: SiteCreate, user: AdminUser, pool: PoolDep) -> SitePublic:
    """Add a site to the caller's organisation (admins only)."""
    return await queries.create_site(pool, user, site)
