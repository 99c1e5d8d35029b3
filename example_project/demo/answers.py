"""The "ask a question" page: a long answer streamed word by word, as a language model would.

``/answer/?q=...`` asks the ``example.answer`` task (simulated locally: no network,
no model) for an answer to ``q``. The same question is one shared job (its key is a
hash of the question), so:

* two tabs asking it show the same text growing, word by word (``job.stream()`` in the
  task, the widget's stream box in the page);
* a reload shows the text so far at once (read from the record's durable chunks) and
  the widget goes on after the last word it rendered: nothing shows twice;
* once the answer is finished, the next visitor gets it whole, from the record, with no
  connection and nothing run again ("Ask again" runs it anew).

Each visitor follows the job with a token of their own (bound to their session).
"""

from __future__ import annotations

import hashlib

from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from django_gearattach import SubmitFailed, streams, submit
from django_gearattach.models import Status
from django_gearattach.tokens import token_for

from .tasks import MAX_PACE, answer


class QuestionForm(forms.Form):
    q = forms.CharField(label="Your question", max_length=200, strip=True)
    pace = forms.FloatField(
        required=False, min_value=0, max_value=MAX_PACE, widget=forms.HiddenInput
    )


def answer_key(question: str) -> str:
    """One job per question, whoever asks it (case and spacing aside)."""
    normalized = " ".join(question.lower().split())
    return "answer-" + hashlib.sha256(normalized.encode()).hexdigest()[:32]


def text_of(chunks: list[streams.Chunk]) -> str:
    return "".join(c.data if isinstance(c.data, str) else str(c.data) for c in chunks)


@require_GET
def ask(request: HttpRequest) -> HttpResponse:
    form = QuestionForm(request.GET or None)
    context: dict[str, object] = {"form": form}
    if not form.is_valid():
        return render(request, "demo/answer.html", context)
    question = form.cleaned_data["q"]
    pace = form.cleaned_data["pace"]
    if not request.session.session_key:
        request.session.save()  # anonymous visitors follow jobs through their session
    try:
        job = submit(
            answer,
            kwargs={"question": question, **({"pace": pace} if pace is not None else {})},
            key=answer_key(question),
            rerun=request.GET.get("again") == "1",
            session_key=request.session.session_key or "",
        )
    except SubmitFailed as exc:
        form.add_error(None, str(exc))
        return render(request, "demo/answer.html", context)
    replay = streams.read(job)
    position = replay.last
    context.update(
        question=question,
        job=job,
        text=text_of(replay.chunks),
        finished=job.status == Status.COMPLETE,
        failed=job.is_finished and job.status != Status.COMPLETE,
        # The next visitor of a finished answer gets it whole: no token, no connection.
        token="" if job.is_finished else token_for(request, job),
        after=f"{position[0]}:{position[1]}" if position else "",
    )
    return render(request, "demo/answer.html", context)
