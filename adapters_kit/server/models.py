"""Typed request and response bodies (they make the OpenAPI schema at /docs)."""

from __future__ import annotations

from typing import Union

from pydantic import BaseModel, ConfigDict, Field


class QAInput(BaseModel):
    """A question and the context to find its answer in (extractive-qa tasks)."""

    model_config = ConfigDict(extra="forbid")
    question: str
    context: str


Input = Union[str, list[str], QAInput]  # noqa: UP007 (pydantic renders this union best)


class PredictRequest(BaseModel):
    """One task, one or more inputs in that task's form (see GET /v1/tasks, field `input`).

    An input is a text (classification, regression, NER); `[text_a, text_b]` (pair tasks);
    a list of words (NER, already split); `{"question", "context"}` or `[question, context]`
    (extractive QA).
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"task": "sst2", "inputs": ["a charming film", "dull and tedious"]}]})
    task: str = Field(min_length=1, max_length=200, description="task name, as in GET /v1/tasks")
    inputs: list[Input] = Field(description="inputs, answered in the same order")


class SequenceOutput(BaseModel):
    """classification: label and scores; multi-label adds labels; regression: value."""

    label: str | None = None
    scores: dict[str, float] | None = None
    labels: list[str] | None = None
    value: float | None = None


class Entity(BaseModel):
    text: str
    type: str
    start: int = Field(description="character offset in the text (words joined by spaces)")
    end: int
    score: float


class TokenOutput(BaseModel):
    """token-classification (NER)."""

    entities: list[Entity]
    tags: list[str] = Field(description="one BIO tag per word")
    truncated: bool = Field(description="words past max_length were not tagged")


class SpanOutput(BaseModel):
    """extractive-qa: the answer span in the context."""

    answer: str
    start: int
    end: int
    score: float
    windows: int = Field(description="context windows the question was read in")


Output = Union[SequenceOutput, TokenOutput, SpanOutput]  # noqa: UP007


class PredictResponse(BaseModel):
    task: str
    kind: str
    outputs: list[Output] = Field(description="one per input, in input order")


class TaskInfo(BaseModel):
    name: str
    kind: str
    labels: list[str]
    input: str = Field(description="the form each input takes")


class TaskList(BaseModel):
    tasks: list[TaskInfo]


class ErrorDetail(BaseModel):
    code: str = Field(description="stable machine-readable code")
    message: str = Field(description="what was wrong and how to fix it")


class ErrorBody(BaseModel):
    error: ErrorDetail


class ReplaceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str = Field(min_length=1, max_length=4096, description=(
        "absolute path, on the server, of a complete adapter directory to install; it is "
        "verified, copied into the store atomically and verified again before it serves"))


class AdapterState(BaseModel):
    name: str
    kind: str | None = None
    enabled: bool = Field(description="served to tenants (an unload disables it)")
    resident: bool = Field(description="loaded in the engine now")
    digest: str | None = Field(default=None, description="sha256 of the resident version")
    error: str | None = None


class AdapterList(BaseModel):
    adapters: list[AdapterState]


class Health(BaseModel):
    status: str
