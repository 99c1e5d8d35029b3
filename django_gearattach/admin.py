"""The operator's console: the job list, a read-only job page, actions, the servers page.

Records belong to the workers, so the admin never edits them: the job page is
read-only, and changes happen only through the actions (retry, cancel, delete
finished). The list is built for large tables: one query for the page (owners
joined), no per-row queries, no full-table count, filters on indexed columns.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, URLPattern, path, reverse
from django.utils import formats, timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from . import presence
from .admin_queries import (
    FunctionFilter,
    ScheduledFilter,
    ServerFilter,
    admin_queryset,
    search,
)
from .conf import conf
from .exceptions import BadPayload
from .gearman.rendezvous import parse_cached
from .housekeeping import delete_records
from .models import ACTIVE, FINISHED, Job, Status
from .operations import Cancel, cancel, retry
from .web.messages import OFFLOAD_FUNCTION

BADGE_COLOURS: dict[str, str] = {
    Status.SCHEDULED: "#6b4fa0",
    Status.QUEUED: "#5f6b7a",
    Status.RUNNING: "#0b5cad",
    Status.COMPLETE: "#176f2c",
    Status.FAILED: "#a40000",
    Status.LOST: "#9a5b00",
    Status.CANCELLED: "#444",
}


def pretty(value: Any) -> SafeString:
    """JSON, indented, escaped, in a <pre>."""
    if value is None:
        return format_html('<span class="gearattach-none">{}</span>', "—")
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, cls=DjangoJSONEncoder)
    return format_html('<pre class="gearattach-pre">{}</pre>', text)


def for_display(arguments: Any) -> Any:
    """A job's arguments as operators may see them: sealed secrets stay hidden.

    An offloaded request's session key, CSRF secret and sensitive form fields are
    sealed (encrypted) in the record; the admin shows that they are there, not even
    their ciphertext.
    """
    request = arguments.get("kwargs", {}).get("request") if isinstance(arguments, dict) else None
    if not isinstance(request, dict) or not (
        request.get("sealed") or request.get("sealed_headers") or "sensitive" in request
    ):
        return arguments
    shown = {**request}
    for part in ("sealed", "sealed_headers"):
        if request.get(part):
            shown[part] = "(encrypted)"
    if request.get("sensitive"):
        shown["sensitive"] = "(encrypted)"
    elif request.get("sensitive_removed"):
        shown["sensitive"] = "(removed once the view had run)"
    kwargs = {**arguments["kwargs"], "request": shown}
    if "signature" in kwargs:
        kwargs["signature"] = "(hidden)"
    return {**arguments, "kwargs": kwargs}


def sensitive_removed(job: Job) -> bool:
    """Whether ``job`` is an offloaded request whose sensitive fields are gone."""
    arguments = job.arguments if isinstance(job.arguments, dict) else {}
    kwargs = arguments.get("kwargs")
    request = kwargs.get("request") if isinstance(kwargs, dict) else None
    return isinstance(request, dict) and bool(request.get("sensitive_removed"))


def unsafe_replay(job: Job) -> dict[str, Any] | None:
    """What retrying ``job`` would replay, when it is an offloaded request that is not
    safe (not GET, HEAD or OPTIONS): its method, path, owner and key."""
    arguments = job.arguments if isinstance(job.arguments, dict) else {}
    kwargs = arguments.get("kwargs")
    request = kwargs.get("request") if isinstance(kwargs, dict) else None
    if job.function != OFFLOAD_FUNCTION or job.is_active or not isinstance(request, dict):
        return None
    if request.get("method") in ("GET", "HEAD", "OPTIONS"):
        return None
    return {
        "method": request.get("method"),
        "path": request.get("path_info"),
        "owner": job.owner,
        "key": job.key,
    }


def human_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def widget_available() -> bool:
    """Whether the project serves the live progress widget's URLs."""
    try:
        reverse("gearattach:status", kwargs={"token": "x"})
    except NoReverseMatch:
        return False
    return True


def _moment(value: Any) -> SafeString:
    """A time in little room: today's by the time of day, others by the date; the whole
    moment in the tooltip."""
    moment = timezone.localtime(value)
    today = moment.date() == timezone.localdate()
    return format_html(
        '<time datetime="{}" title="{}">{}</time>',
        moment.isoformat(),
        formats.date_format(moment, "DATETIME_FORMAT"),
        formats.time_format(moment) if today else formats.date_format(moment, "SHORT_DATE_FORMAT"),
    )


if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[Job]
else:  # ModelAdmin is generic only in django-stubs
    _ModelAdmin = admin.ModelAdmin


@admin.register(Job)
class JobAdmin(_ModelAdmin):
    # What fits beside the admin's navigation and the filters in a 1280 px window. The
    # owner, the server, the attempts and retries, and a scheduled job's time are on the
    # job's page (the server and "scheduled" are filters, the owner is searchable).
    list_display = [
        "function",
        "key_display",
        "status_badge",
        "progress_bar",
        "created_display",
        "duration_display",
    ]
    list_filter = [
        "status",
        ScheduledFilter,
        FunctionFilter,
        ServerFilter,
        ("created_at", admin.DateFieldListFilter),
    ]
    date_hierarchy = "created_at"
    list_per_page = 50
    # The count of the whole table is a full scan on big tables; the filtered count stays.
    show_full_result_count = False
    actions = ["retry_jobs", "cancel_jobs", "delete_finished"]
    ordering = ["-created_at"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "function",
                    "key",
                    "status_badge",
                    "priority",
                    "owner",
                    "server",
                    "handle",
                    "attempts",
                    "retries",
                    "worker",
                ]
            },
        ),
        (
            _("Runs of the key"),
            {
                "fields": [
                    "run_number",
                    "run_reason",
                    "on_conflict",
                    "next_reason",
                    "previous_finished_at",
                ]
            },
        ),
        (_("Progress"), {"fields": ["live_progress", "pretty_data"]}),
        (
            _("Timeline"),
            {
                "fields": [
                    "created_at",
                    "scheduled_for",
                    "started_at",
                    "cancel_requested_at",
                    "finished_at",
                    "waited",
                    "ran",
                ]
            },
        ),
        (_("Arguments"), {"fields": ["pretty_arguments"]}),
        (
            _("Outcome"),
            {
                "fields": [
                    "pretty_result",
                    "error",
                    "exception_module",
                    "exception_qualname",
                    "pretty_traceback",
                ]
            },
        ),
    ]

    class Media:
        css = {"all": ["django_gearattach/admin.css"]}

    # -- permissions: records are the workers'; operators act through actions --------
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Job | None = None) -> bool:
        # The job page is read-only; "change" permission is what the actions need.
        return obj is None and super().has_change_permission(request)

    def delete_model(self, request: HttpRequest, obj: Job) -> None:
        delete_records(Job.objects.filter(pk=obj.pk))  # with the files it left in storage

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        delete_records(queryset)

    def has_delete_permission(self, request: HttpRequest, obj: Job | None = None) -> bool:
        # A queued or running record would only be recorded again by its worker.
        if obj is not None and obj.is_active:
            return False
        return super().has_delete_permission(request, obj)

    def get_readonly_fields(self, request: HttpRequest, obj: Job | None = None) -> list[str]:
        fieldsets = self.fieldsets or []
        return [f for _, opts in fieldsets for f in opts["fields"] if isinstance(f, str)]

    def get_search_fields(self, request: HttpRequest) -> list[str]:
        return ["key"]  # shows the search box; get_search_results does the searching

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Job], search_term: str
    ) -> tuple[QuerySet[Job], bool]:
        """An exact key, the beginning of a function name, or an owner's username."""
        return search(queryset, search_term), False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Job]:
        return admin_queryset(super().get_queryset(request))  # type: ignore[arg-type]

    def get_actions(self, request: HttpRequest, action_location: Any = None) -> dict[str, Any]:
        # Django 6.1 passes action_location; Django 5.2 has no such argument.
        location = {} if action_location is None else {"action_location": action_location}
        actions = super().get_actions(request, **location)
        # Deleting a queued or running record would only make a worker record it again.
        actions.pop("delete_selected", None)
        return actions

    # -- columns -----------------------------------------------------------------------
    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, job: Job) -> SafeString:
        badge = format_html(
            '<span class="gearattach-badge" style="background:{}">{}</span>',
            BADGE_COLOURS.get(job.status, "#444"),
            job.get_status_display(),
        )
        if job.status == Status.SCHEDULED and job.scheduled_for is not None:
            return format_html("{} {}", badge, _moment(job.scheduled_for))
        return badge

    @admin.display(description=_("key"), ordering="key")
    def key_display(self, job: Job) -> SafeString:
        # Cut short by admin.css; the whole key in the tooltip.
        return format_html('<span title="{}">{}</span>', job.key, job.key)

    @admin.display(description=_("created"), ordering="created_at")
    def created_display(self, job: Job) -> SafeString:
        return _moment(job.created_at)

    @admin.display(description=_("progress"))
    def progress_bar(self, job: Job) -> SafeString:
        fraction = job.progress
        if fraction is None:
            return format_html("{}", "100%" if job.status == Status.COMPLETE else "—")
        percent = round(fraction * 100)
        return format_html(
            '<progress class="gearattach-progress" value="{}" max="{}" title="{} / {}">'
            "</progress> {}%",
            job.progress_numerator,
            job.progress_denominator,
            job.progress_numerator,
            job.progress_denominator,
            percent,
        )

    @admin.display(description=_("duration"))
    def duration_display(self, job: Job) -> str:
        if job.status == Status.RUNNING and job.started_at is not None:
            return f"{human_seconds((timezone.now() - job.started_at).total_seconds())} …"
        return human_seconds(job.duration)

    # -- the read-only job page --------------------------------------------------------
    @admin.display(description=_("worker"))
    def worker(self, job: Job) -> str:
        return f"{job.worker_host} (pid {job.worker_pid})" if job.worker_host else "—"

    @admin.display(description=_("progress"))
    def live_progress(self, job: Job) -> SafeString:
        return self.progress_bar(job)

    @admin.display(description=_("last data"))
    def pretty_data(self, job: Job) -> SafeString:
        return pretty(job.data)

    @admin.display(description=_("arguments"))
    def pretty_arguments(self, job: Job) -> SafeString:
        return pretty(for_display(job.arguments))

    @admin.display(description=_("result"))
    def pretty_result(self, job: Job) -> SafeString:
        return pretty(job.result)

    @admin.display(description=_("traceback"))
    def pretty_traceback(self, job: Job) -> SafeString:
        if not job.traceback:
            return format_html('<span class="gearattach-none">{}</span>', "—")
        return format_html('<pre class="gearattach-pre">{}</pre>', job.traceback)

    @admin.display(description=_("waited in the queue"))
    def waited(self, job: Job) -> str:
        if job.started_at is None:
            return "—"
        return human_seconds((job.started_at - job.created_at).total_seconds())

    @admin.display(description=_("ran for"))
    def ran(self, job: Job) -> str:
        return self.duration_display(job)

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Job | None = None,
    ) -> HttpResponse:
        # A running or queued job gets the live widget (when the project serves its
        # URLs), with a token bound to this operator. A summary token: an offloaded
        # view's page is its user's, not the operator's.
        if obj is not None and obj.is_active and widget_available():
            from .web.tokens import token_for

            context["gearattach_live_token"] = token_for(request, obj, summary=True)
        # gearmand's status counts, cached per process: no probe per page.
        if obj is not None and presence.unserved(obj):
            address = parse_cached(obj.server) if obj.server else conf.SERVERS[0]
            self.message_user(
                request,
                _(
                    "No worker is running for %(function)s on %(server)s: this job "
                    "waits in the queue until one starts."
                )
                % {"function": obj.function, "server": address},
                messages.WARNING,
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    # -- actions -----------------------------------------------------------------------
    @admin.action(description=_("Retry under a new key"), permissions=["change"])
    def retry_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> TemplateResponse | None:
        jobs = list(queryset.select_related("owner"))
        replays = [r for r in map(unsafe_replay, jobs) if r is not None]
        if replays and request.POST.get("confirm_replay") != "yes":
            return self.confirm_replay(request, jobs, replays)
        done, skipped_active, skipped_unknown, skipped_foreign = [], 0, 0, 0
        skipped_sensitive = 0
        for job in jobs:
            if job.is_active:
                skipped_active += 1
                continue
            if sensitive_removed(job):
                skipped_sensitive += 1
                continue
            try:
                done.append(retry(job))
            except BadPayload:
                skipped_foreign += 1
            except ValueError:
                skipped_unknown += 1
        if done:
            keys = ", ".join(j.key for j in done[:5]) + (" …" if len(done) > 5 else "")
            self.message_user(
                request,
                ngettext(
                    "Resubmitted %(count)d job under a new key: %(keys)s.",
                    "Resubmitted %(count)d jobs under new keys: %(keys)s.",
                    len(done),
                )
                % {"count": len(done), "keys": keys},
                messages.SUCCESS,
            )
        if skipped_active:
            self.message_user(
                request,
                ngettext(
                    "%(count)d job is still queued or running and was not retried.",
                    "%(count)d jobs are still queued or running and were not retried.",
                    skipped_active,
                )
                % {"count": skipped_active},
                messages.WARNING,
            )
        if skipped_unknown:
            self.message_user(
                request,
                ngettext(
                    "%(count)d job has no recorded arguments and cannot be retried.",
                    "%(count)d jobs have no recorded arguments and cannot be retried.",
                    skipped_unknown,
                )
                % {"count": skipped_unknown},
                messages.WARNING,
            )
        if skipped_foreign:
            self.message_user(
                request,
                ngettext(
                    "%(count)d offloaded request was not signed by this site and was not retried.",
                    "%(count)d offloaded requests were not signed by this site and were not "
                    "retried.",
                    skipped_foreign,
                )
                % {"count": skipped_foreign},
                messages.ERROR,
            )
        if skipped_sensitive:
            self.message_user(
                request,
                ngettext(
                    "%(count)d offloaded request had its sensitive fields removed once it ran "
                    "and cannot be sent again: ask its user to send the form again.",
                    "%(count)d offloaded requests had their sensitive fields removed once they "
                    "ran and cannot be sent again: ask their users to send the forms again.",
                    skipped_sensitive,
                )
                % {"count": skipped_sensitive},
                messages.ERROR,
            )
        return None

    def confirm_replay(
        self, request: HttpRequest, jobs: list[Job], replays: list[dict[str, Any]]
    ) -> TemplateResponse:
        """Retrying an offloaded POST replays it as its user: ask first."""
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Send these requests again?"),
            "queryset": jobs,
            "replays": replays,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(
            request, "admin/django_gearattach/job/confirm_replay.html", context
        )

    @admin.action(
        description=_("Cancel jobs (queued: at once; running: by their worker)"),
        permissions=["change"],
    )
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        counts = dict.fromkeys(Cancel, 0)
        counts[Cancel.FINISHED] = queryset.filter(status__in=FINISHED).count()
        notes = []
        for job in queryset.filter(status__in=ACTIVE):
            outcome = cancel(job)
            counts[outcome.verdict] += 1
            if outcome.note and outcome.verdict is Cancel.CANCELLED and "not told" in outcome.note:
                notes.append(outcome.note)
        if counts[Cancel.CANCELLED]:
            self.message_user(
                request,
                ngettext(
                    "Cancelled %(count)d queued job.",
                    "Cancelled %(count)d queued jobs.",
                    counts[Cancel.CANCELLED],
                )
                % {"count": counts[Cancel.CANCELLED]},
                messages.SUCCESS,
            )
        if counts[Cancel.REQUESTED]:
            self.message_user(
                request,
                ngettext(
                    "Asked the worker running %(count)d job to stop it: it ends cancelled "
                    "at its next progress report, or is stopped %(grace)gs later.",
                    "Asked the workers running %(count)d jobs to stop them: they end "
                    "cancelled at their next progress report, or are stopped %(grace)gs later.",
                    counts[Cancel.REQUESTED],
                )
                % {"count": counts[Cancel.REQUESTED], "grace": conf.CANCEL_GRACE},
                messages.SUCCESS,
            )
        if counts[Cancel.FINISHED]:
            self.message_user(
                request,
                ngettext(
                    "%(count)d job had already finished.",
                    "%(count)d jobs had already finished.",
                    counts[Cancel.FINISHED],
                )
                % {"count": counts[Cancel.FINISHED]},
                messages.INFO,
            )
        for note in notes:
            self.message_user(request, note, messages.WARNING)

    @admin.action(description=_("Delete finished records"), permissions=["delete"])
    def delete_finished(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        active = queryset.filter(status__in=ACTIVE).count()
        deleted = delete_records(queryset.filter(status__in=FINISHED))
        self.message_user(
            request,
            ngettext(
                "Deleted %(count)d finished record.",
                "Deleted %(count)d finished records.",
                deleted,
            )
            % {"count": deleted},
            messages.SUCCESS,
        )
        if active:
            self.message_user(
                request,
                ngettext(
                    "%(count)d queued or running record was kept.",
                    "%(count)d queued or running records were kept.",
                    active,
                )
                % {"count": active},
                messages.WARNING,
            )

    # -- the servers page ----------------------------------------------------------------
    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        servers = path(
            "servers/",
            self.admin_site.admin_view(self.servers_view),
            name="{}_{}_servers".format(*info),
        )
        from .dashboard.views import urls as dashboard_urls

        return [servers, *dashboard_urls(self), *super().get_urls()]

    def servers_view(self, request: HttpRequest) -> TemplateResponse:
        """Each configured gearmand: reachable or not, version, per-function queues."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        from .health import probe_all, unserved

        servers = probe_all(conf.SERVERS, timeout=min(conf.TIMEOUT, 3.0))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Gearman servers"),
            "subtitle": None,
            "servers": servers,
            "unserved": unserved(servers),
            "immediate": conf.IMMEDIATE,
            "has_view_permission": True,
            "changelist_url": reverse(
                f"{self.admin_site.name}:{self.opts.app_label}_{self.opts.model_name}_changelist"
            ),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/django_gearattach/job/servers.html", context)
