# The bucket set-up portail expects, as a small Terraform module (the same settings as
# deploy/bucket/*.json): versioning on, noncurrent versions (and HISTORY=prefix copies)
# expiring after the history's retention, incomplete multipart uploads aborted after a day, and an IAM policy per service
# (deploy/iam/*.json, with BUCKET and PREFIX filled in).
#
#   module "portail_bucket" {
#     source          = "./deploy/terraform/bucket"
#     bucket          = "my-bucket"
#     prefix          = "host1/"
#     history_days    = 90
#   }
#
# Then attach module.portail_bucket.agent_policy_json and .url_service_policy_json to the
# services' IAM users or roles. Not run in CI (Terraform is not packaged in Debian); the JSON
# files it reads are checked by tests/tests/iam.rs.

terraform {
  required_version = ">= 1.3"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0"
    }
  }
}

variable "bucket" {
  description = "An existing bucket (AWS_BUCKET_NAME)."
  type        = string
}

variable "prefix" {
  description = "S3_PREFIX of the agent, with its trailing slash; empty for the whole bucket."
  type        = string
  default     = ""
}

variable "history_days" {
  description = "Days a noncurrent (overwritten or deleted) version is kept."
  type        = number
  default     = 90
}

variable "history_prefix_days" {
  description = "Days a HISTORY=prefix copy is kept at most (above HISTORY_RETENTION)."
  type        = number
  default     = 35
}

resource "aws_s3_bucket_versioning" "this" {
  bucket = var.bucket
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  bucket     = var.bucket
  depends_on = [aws_s3_bucket_versioning.this]

  rule {
    id     = "portail-history-retention"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = var.history_days
    }
  }

  # HISTORY=prefix copies: a backstop for the agent's hourly purge, for when no agent runs.
  # Keep it above HISTORY_RETENTION.
  rule {
    id     = "portail-history-prefix-expiration"
    status = "Enabled"
    filter {
      prefix = "${var.prefix}.portail-history/"
    }
    expiration {
      days = var.history_prefix_days
    }
  }

  rule {
    id     = "portail-abort-incomplete-multipart"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

locals {
  agent_policy = replace(replace(file("${path.module}/../../iam/agent-policy.json"),
  "BUCKET", var.bucket), "PREFIX", var.prefix)
  url_service_policy = replace(replace(file("${path.module}/../../iam/url-service-policy.json"),
  "BUCKET", var.bucket), "PREFIX", var.prefix)
}

output "agent_policy_json" {
  description = "The agent's IAM policy for this bucket and prefix."
  value       = local.agent_policy
}

output "url_service_policy_json" {
  description = "The url-service's IAM policy for this bucket and prefix."
  value       = local.url_service_policy
}
