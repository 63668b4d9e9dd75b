"""boto3's `bedrock` client drives the simulator's model invocation jobs: create, get, list, stop.

Every answer boto3 parses is checked against botocore's own service model (each key a member of the
output shape, each status one of its enum, each ARN its pattern): what the simulator serves is what
the SDK would take from AWS.
"""

from __future__ import annotations

import asyncio
import re

import boto3
import botocore.config
import orjson
import pytest
from botocore.exceptions import ClientError

from ...cluster.servers import MotoServer

MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"
ROLE = "arn:aws:iam::123456789012:role/batch"


@pytest.fixture(scope="module")
def moto():
    with MotoServer() as server:
        yield server


@pytest.fixture
def bucket(moto, sim):
    sim.config.bedrock_s3_endpoint = moto.endpoint
    return moto.new_bucket()


@pytest.fixture
def aws(sim, moto):
    config = botocore.config.Config(retries={"max_attempts": 1})
    creds = {"region_name": "us-east-1", "aws_access_key_id": "AKIDCONTRACT", "aws_secret_access_key": "secret",
             "config": config}
    return boto3.client("bedrock", endpoint_url=sim.url, **creds), boto3.client("s3", endpoint_url=moto.endpoint, **creds)


def check_shape(client, operation: str, answer: dict) -> None:
    """Each key of the answer a member of the operation's output shape, recursively; enums and patterns kept."""
    def walk(shape, value, where):
        if shape.type_name == "structure":
            assert isinstance(value, dict), where
            unknown = set(value) - set(shape.members)
            assert not unknown, f"{where}: {unknown} not in {shape.name}"
            for name in shape.required_members:
                assert name in value, f"{where}.{name} missing"
            for name, item in value.items():
                walk(shape.members[name], item, f"{where}.{name}")
        elif shape.type_name == "list":
            for i, item in enumerate(value):
                walk(shape.member, item, f"{where}[{i}]")
        elif shape.type_name == "string":
            assert isinstance(value, str), where
            if shape.enum:
                assert value in shape.enum, f"{where}: {value!r}"
            pattern = shape.metadata.get("pattern")
            if pattern:
                assert re.fullmatch(pattern, value), f"{where}: {value!r} !~ {pattern}"
        elif shape.type_name == "timestamp":
            assert hasattr(value, "tzinfo"), where  # boto3 parsed it into a datetime
        elif shape.type_name in ("integer", "long"):
            assert type(value) is int, where
    model = client.meta.service_model.operation_model(operation).output_shape
    walk(model, {k: v for k, v in answer.items() if k != "ResponseMetadata"}, operation)


def put_records(s3, bucket: str, key: str, n: int) -> str:
    lines = [orjson.dumps({"recordId": f"r{i}", "modelInput": {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 20,
                                                               "messages": [{"role": "user", "content": "hi"}]}})
             for i in range(n)]
    s3.put_object(Bucket=bucket, Key=key, Body=b"\n".join(lines) + b"\n")
    return f"s3://{bucket}/{key}"


def create_args(bucket: str, uri: str, name: str, token: str) -> dict:
    return {"jobName": name, "roleArn": ROLE, "modelId": MODEL, "clientRequestToken": token,
            "inputDataConfig": {"s3InputDataConfig": {"s3Uri": uri, "s3InputFormat": "JSONL"}},
            "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": f"s3://{bucket}/out/"}}}


async def call(client, operation: str, **kwargs) -> dict:
    answer = await asyncio.to_thread(getattr(client, operation), **kwargs)
    check_shape(client, {"create_model_invocation_job": "CreateModelInvocationJob",
                         "get_model_invocation_job": "GetModelInvocationJob",
                         "list_model_invocation_jobs": "ListModelInvocationJobs",
                         "stop_model_invocation_job": "StopModelInvocationJob"}[operation], answer)
    return answer


async def test_a_job_through_boto3_from_submitted_to_completed_with_its_output_in_s3(sim, aws, bucket, clock):
    bedrock, s3 = aws
    uri = put_records(s3, bucket, "in/input.jsonl", 120)
    created = await call(bedrock, "create_model_invocation_job", **create_args(bucket, uri, "job-1", "tok-1"))
    again = await call(bedrock, "create_model_invocation_job", **create_args(bucket, uri, "job-1", "tok-1"))
    assert again["jobArn"] == created["jobArn"]  # the same token: the same job, no second one
    seen = []
    for _ in range(4):
        seen.append((await call(bedrock, "get_model_invocation_job", jobIdentifier=created["jobArn"]))["status"])
        clock.advance(3)
    assert seen == ["Submitted", "InProgress", "InProgress", "InProgress"]
    job_id = created["jobArn"].rpartition("/")[2]
    done = await call(bedrock, "get_model_invocation_job", jobIdentifier=job_id)
    assert done["status"] == "Completed" and done["totalRecordCount"] == done["successRecordCount"] == 120
    output = s3.get_object(Bucket=bucket, Key=f"out/{job_id}/input.jsonl.out")["Body"].read().splitlines()
    assert sorted(orjson.loads(x)["recordId"] for x in output) == sorted(f"r{i}" for i in range(120))
    manifest = orjson.loads(s3.get_object(Bucket=bucket, Key=f"out/{job_id}/manifest.json.out")["Body"].read())
    assert manifest["processedRecordCount"] == 120
    # the six fields of batch-inference-results, tokens included
    assert set(manifest) == {"totalRecordCount", "processedRecordCount", "successRecordCount", "errorRecordCount",
                             "inputTokenCount", "outputTokenCount"}
    assert manifest["inputTokenCount"] > 0 and manifest["outputTokenCount"] > 0


async def test_boto3_lists_jobs_newest_first_by_pages_and_stops_one(sim, aws, bucket, clock):
    bedrock, s3 = aws
    uri = put_records(s3, bucket, "in/input.jsonl", 100)
    arns = [(await call(bedrock, "create_model_invocation_job", **create_args(bucket, uri, f"job-{i}", f"t-{i}")))["jobArn"]
            for i in range(3)]
    first = await call(bedrock, "list_model_invocation_jobs", maxResults=2)
    rest = await call(bedrock, "list_model_invocation_jobs", maxResults=2, nextToken=first["nextToken"])
    listed = [j["jobArn"] for j in first["invocationJobSummaries"] + rest["invocationJobSummaries"]]
    assert listed == arns[::-1] and "nextToken" not in rest
    clock.advance(5)
    await call(bedrock, "stop_model_invocation_job", jobIdentifier=arns[0])
    stopped = await call(bedrock, "get_model_invocation_job", jobIdentifier=arns[0])
    assert stopped["status"] == "Stopped" and stopped["processedRecordCount"] < 100


async def test_boto3_reads_the_floor_the_quota_and_a_missing_job_as_bedrocks_exceptions(sim, aws, bucket):
    bedrock, s3 = aws
    small = put_records(s3, bucket, "small/input.jsonl", 99)
    with pytest.raises(ClientError) as floor:
        await asyncio.to_thread(bedrock.create_model_invocation_job, **create_args(bucket, small, "small", "s"))
    assert floor.value.response["Error"]["Code"] == "ValidationException"
    assert "below the minimum (100)" in floor.value.response["Error"]["Message"]
    sim.config.bedrock_jobs_limit = 1
    uri = put_records(s3, bucket, "in/input.jsonl", 100)
    await asyncio.to_thread(bedrock.create_model_invocation_job, **create_args(bucket, uri, "one", "one"))
    with pytest.raises(ClientError) as quota:
        await asyncio.to_thread(bedrock.create_model_invocation_job, **create_args(bucket, uri, "two", "two"))
    assert quota.value.response["Error"]["Code"] == "ServiceQuotaExceededException"
    with pytest.raises(ClientError) as missing:
        await asyncio.to_thread(bedrock.get_model_invocation_job, jobIdentifier="abcdefabcdef")
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"
