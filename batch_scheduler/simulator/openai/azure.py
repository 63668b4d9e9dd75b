"""Azure OpenAI global batch (PROVIDERS.md §4): OpenAI's files + batches on a resource, served on both surfaces.

    v1      /openai/v1/files, /openai/v1/batches, ...        (no api-version)
    dated   /openai/files?api-version=..., /openai/batches?api-version=...

What differs from OpenAI (simulator/openai/api.py, which this reuses): the key comes in the `api-key`
header (the server's gate takes it); each line's model is a deployment name, the same on every line;
create's `endpoint` may say `/chat/completions` as well as `/v1/chat/completions`, and so may each
line's `url` (`url_mismatch` only when they name different endpoints); at most 100,000 requests a
file (`azure_max_requests`); an ended batch always has an error file, empty when nothing failed; the
enqueued tokens are counted per deployment; a deployment not of a batch SKU (`azure_batch_deployments`
names those that are) fails its batch at validation with `invalid_request`.

By default the answers are what the openai SDK's types accept (lowercase statuses, epoch seconds).
`azure_variants` (a fault option, on in `SimConfig.real_faults`) serves what Azure's own samples
show, which a client must survive: capitalised statuses (`Validating`, `InProgress`-style spellings
are not documented, so only the first letter), ISO-8601 times with seven fractional digits, and
`request_counts` of nulls while validating.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from batch_scheduler.simulator.context import SimContext
from batch_scheduler.simulator.openai.api import OpenAIApi, line_error
from batch_scheduler.simulator.openai.files import OpenAIFiles
from batch_scheduler.simulator.store import Batch

SURFACES = ("/openai/v1", "/openai")  # the v1 surface, the dated one (api-version in the query)
_TIMES = ("created_at", "in_progress_at", "expires_at", "finalizing_at", "completed_at", "failed_at", "expired_at",
          "cancelling_at", "cancelled_at")


def iso(epoch_s: int) -> str:
    """An epoch second as Azure's samples write it: `2024-07-19T17:13:57.2491382+00:00`."""
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000+00:00")


def without_v1(endpoint: Any) -> Any:
    """`/v1/chat/completions` and `/chat/completions` name the same endpoint on Azure."""
    return endpoint[3:] if isinstance(endpoint, str) and endpoint.startswith("/v1/") else endpoint


class AzureApi(OpenAIApi):
    kind = "azure"
    max_requests_field = "azure_max_requests"

    def __init__(self, ctx: SimContext):
        super().__init__(ctx, OpenAIFiles(ctx, root=SURFACES[0], empty_error_file=True))
        self.dated_files = OpenAIFiles(ctx, root=SURFACES[1], empty_error_file=True)
        self.dated_files.records = self.files.records  # one resource: both surfaces see the same files

    def routes(self) -> list[tuple[str, str, str, Any, bool]]:
        routes = [*self.files.routes(), *self.dated_files.routes()]
        for root in SURFACES:
            routes += [
                ("POST", f"{root}/batches", "azure.batches.create", self.create_route, True),
                ("GET", f"{root}/batches", "azure.batches.list", self.list, False),
                ("GET", f"{root}/batches/{{id}}", "azure.batches.retrieve", self.retrieve, False),
                ("POST", f"{root}/batches/{{id}}/cancel", "azure.batches.cancel", self.cancel, False),
            ]
        return routes

    def endpoint_of(self, endpoint: Any) -> Any:
        return "/v1" + endpoint if isinstance(endpoint, str) and endpoint.startswith("/") and \
            not endpoint.startswith("/v1/") else endpoint

    @staticmethod
    def url_matches(url: Any, endpoint: str) -> bool:
        return without_v1(url) == without_v1(endpoint)

    def doc(self, batch: Any, *, fresh: bool = False, cancelling: bool = False) -> dict[str, Any]:
        doc = super().doc(batch, fresh=fresh, cancelling=cancelling)
        doc["endpoint"] = without_v1(doc["endpoint"]) if batch.extra.get("bare_endpoint") else doc["endpoint"]
        if not self.ctx.config.azure_variants:
            return doc
        doc["status"] = doc["status"][:1].upper() + doc["status"][1:]
        for name in _TIMES:
            if isinstance(doc.get(name), int):
                doc[name] = iso(doc[name])
        if doc["status"] == "Validating":
            doc["request_counts"] = {"total": None, "completed": None, "failed": None}
        return doc

    def _token_limit(self, model: str | None, tokens: int, now: float) -> list[dict] | None:
        """A deployment that is not a batch one (`azure_batch_deployments`) fails the batch at validation;
        then the enqueued tokens, as OpenAI's."""
        batch_ones = self.ctx.config.azure_batch_deployments
        if model and batch_ones is not None and model not in batch_ones:
            return [line_error(None, "invalid_request", f"The deployment '{model}' is not a batch deployment: a batch "
                               f"must name a deployment of type Global-Batch or Data Zone Batch.")]
        return super()._token_limit(model, tokens, now)

    def make(self, doc: Any) -> Batch:
        batch = super().make(doc)
        if isinstance(doc, dict) and not str(doc.get("endpoint", "")).startswith("/v1/"):
            batch.extra["bare_endpoint"] = True  # answered as it was asked
        return batch
