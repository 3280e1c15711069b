"""Pagination styles: how to ask for the first page and, from a page, for the next one.

- offset: `limit`/`offset` query parameters; a short page is the last (OpenDental).
- page: `page`/`per_page`; follows `links.next` when the provider gives one (Cliniko),
  else stops at the total (Ascend's `meta.pagination.total`) or on a short page.
- token: an opaque `nextPageToken`; an empty page with a token is not the end (Google).
- cursor: a `next_cursor` value, optionally with a `has_more` flag; the page size goes in
  `limit_param` (as `limit` does for offset paging; None sends none).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clinicsync.integrations.definitions import PaginationSpec, PaginationStyle
from clinicsync.integrations.transforms import get_path


@dataclass
class PageRequest:
    """What changes between pages: extra query parameters, or a full URL given by the provider."""

    params: dict[str, Any] = field(default_factory=dict)
    url: str | None = None


class Paginator:
    def __init__(self, spec: PaginationSpec, page_size: int | None = None) -> None:
        self.spec = spec
        self.page_size = min(page_size or spec.page_size, spec.page_size)
        self.pages = 0
        self.records = 0
        self._offset = 0
        self._page = spec.start_page

    def first(self) -> PageRequest:
        spec = self.spec
        match spec.style:
            case PaginationStyle.OFFSET:
                return PageRequest({spec.limit_param or "limit": self.page_size, spec.offset_param: 0})
            case PaginationStyle.PAGE:
                params: dict[str, Any] = {spec.page_param: spec.start_page}
                if spec.per_page_param:
                    params[spec.per_page_param] = self.page_size
                return PageRequest(params)
            case PaginationStyle.TOKEN:
                return PageRequest({spec.per_page_param: self.page_size} if spec.per_page_param else {})
            case PaginationStyle.CURSOR:
                return PageRequest({spec.limit_param: self.page_size} if spec.limit_param else {})
        return PageRequest()

    def next(self, body: Any, record_count: int) -> PageRequest | None:
        """The request for the following page, or None when this page was the last."""
        spec = self.spec
        self.pages += 1
        self.records += record_count
        if self.pages >= spec.max_pages:
            return None
        match spec.style:
            case PaginationStyle.OFFSET:
                if record_count < self.page_size:
                    return None
                self._offset += record_count
                return PageRequest(
                    {spec.limit_param or "limit": self.page_size, spec.offset_param: self._offset}
                )
            case PaginationStyle.PAGE:
                return self._next_page(body, record_count)
            case PaginationStyle.TOKEN:
                token = get_path(body, spec.token_path)
                if not token:
                    return None
                return PageRequest({**self.first().params, spec.token_param: token})
            case PaginationStyle.CURSOR:
                cursor = get_path(body, spec.cursor_path)
                if spec.has_more_path is not None and not get_path(body, spec.has_more_path):
                    return None
                if not cursor:
                    return None
                return PageRequest({**self.first().params, spec.cursor_param: cursor})
        return None

    def _next_page(self, body: Any, record_count: int) -> PageRequest | None:
        spec = self.spec
        if spec.next_link_path:
            link = get_path(body, spec.next_link_path)
            # A link-driven API says when it is done; no link is the last page.
            return PageRequest(url=str(link)) if link else None
        if spec.total_path:
            total = get_path(body, spec.total_path)
            if total is not None and self.records >= int(total):
                return None
        if record_count == 0 or record_count < self.page_size:
            return None
        self._page += 1
        params: dict[str, Any] = {spec.page_param: self._page}
        if spec.per_page_param:
            params[spec.per_page_param] = self.page_size
        return PageRequest(params)
