terraform {
  required_version = ">= 1.5"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.0"
    }
  }
  # State stays local (infra/terraform.tfstate, gitignored) unless you add a backend,
  # e.g. backend "gcs" { bucket = "<your-state-bucket>" prefix = "converge" }.
}

provider "google" {
  project = var.project
  region  = var.region
}
