package server

// openAPIDoc describes the API (OpenAPI 3.0). Schemas mirror package
// client's types; server_test checks every route is documented.
const openAPIDoc = `{
  "openapi": "3.0.3",
  "info": {"title": "hone", "version": "1", "description": "Self-hosted fine-tuning of Llama-family models: runs, tracking and the model catalog."},
  "components": {
    "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    "schemas": {
      "Error": {"type": "object", "properties": {"code": {"type": "string"}, "error": {"type": "string"}}},
      "Optimizer": {"type": "object", "properties": {
        "beta1": {"type": "number"}, "beta2": {"type": "number"}, "eps": {"type": "number"}, "weight_decay": {"type": "number"},
        "max_grad_norm": {"type": "number"}, "warmup_frac": {"type": "number"}, "decay": {"type": "string", "enum": ["linear", "cosine"]},
        "final_lr_mult": {"type": "number"}}},
      "CreateRunRequest": {"type": "object", "required": ["model", "train_data_path", "register_to"], "properties": {
        "model": {"type": "string", "description": "local HF directory, HF id in the local HF cache, or catalog version (main.demo.bot/3, main.demo.bot@champion)"},
        "train_data_path": {"type": "string"}, "register_to": {"type": "string", "description": "catalog.schema or catalog.schema.model"},
        "task_type": {"type": "string", "enum": ["CHAT_COMPLETION", "INSTRUCTION_FINETUNE", "CONTINUED_PRETRAIN"], "default": "CHAT_COMPLETION"},
        "training_duration": {"type": "string", "example": "3ep", "default": "1ep"},
        "learning_rate": {"type": "number"}, "context_length": {"type": "integer"}, "eval_data_path": {"type": "string"},
        "eval_prompts": {"type": "array", "items": {"type": "string"}}, "custom_weights_path": {"type": "string"},
        "experiment_path": {"type": "string"}, "validate_inputs": {"type": "boolean", "default": true}, "user": {"type": "string"},
        "seed": {"type": "integer"}, "batch_rows": {"type": "integer"}, "grad_accum": {"type": "integer"}, "precision": {"type": "string", "enum": ["fp32", "bf16"]},
        "checkpoint_every": {"type": "integer"}, "keep_checkpoints": {"type": "integer"},
        "optimizer": {"$ref": "#/components/schemas/Optimizer"}}},
      "Event": {"type": "object", "properties": {"id": {"type": "integer"}, "type": {"type": "string"}, "time": {"type": "string", "format": "date-time"}, "message": {"type": "string"}}},
      "Checkpoint": {"type": "object", "properties": {"step": {"type": "integer"}, "epoch": {"type": "number"}, "path": {"type": "string"}, "time": {"type": "string", "format": "date-time"}}},
      "LatestMetrics": {"type": "object", "properties": {"step": {"type": "integer"}, "total_steps": {"type": "integer"}, "epoch": {"type": "number"},
        "loss": {"type": "number"}, "lr": {"type": "number"}, "grad_norm": {"type": "number"}, "tokens_per_s": {"type": "number"},
        "tokens_seen": {"type": "integer"}, "elapsed_s": {"type": "number"}, "eval_loss": {"type": "number"}, "perplexity": {"type": "number"},
        "token_accuracy": {"type": "number"}}},
      "Run": {"type": "object", "properties": {
        "name": {"type": "string"}, "user": {"type": "string"}, "experiment_path": {"type": "string"},
        "status": {"type": "string", "enum": ["PENDING", "QUEUED", "STARTING", "RUNNING", "COMPLETED", "FAILED", "STOPPING", "STOPPED"]},
        "config": {"$ref": "#/components/schemas/CreateRunRequest"}, "base_model": {"type": "string"}, "model_dir": {"type": "string"},
        "register_to": {"type": "string"}, "registered_model": {"type": "string"}, "error": {"type": "string"},
        "created_at": {"type": "string", "format": "date-time"}, "started_at": {"type": "string", "format": "date-time"},
        "estimated_end_at": {"type": "string", "format": "date-time"}, "completed_at": {"type": "string", "format": "date-time"},
        "validation": {"type": "string"},
        "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
        "checkpoints": {"type": "array", "items": {"$ref": "#/components/schemas/Checkpoint"}},
        "metrics": {"$ref": "#/components/schemas/LatestMetrics"}}},
      "RunList": {"type": "object", "properties": {"runs": {"type": "array", "items": {"$ref": "#/components/schemas/Run"}}, "next_page_token": {"type": "string"}}},
      "CancelRequest": {"type": "object", "properties": {"names": {"type": "array", "items": {"type": "string"}}, "experiment_path": {"type": "string"}}},
      "CancelResult": {"type": "object", "properties": {"runs": {"type": "array", "items": {"$ref": "#/components/schemas/Run"}}}},
      "Metrics": {"type": "object", "properties": {"steps": {"type": "array", "items": {"type": "object"}}, "evals": {"type": "array", "items": {"type": "object"}}}},
      "ModelVersion": {"type": "object", "properties": {"version": {"type": "integer"}, "storage_location": {"type": "string"}, "run": {"type": "string"},
        "base_model": {"type": "string"}, "data_fingerprint": {"type": "string"}, "metrics": {"type": "object"}, "license": {"type": "string"},
        "created_at": {"type": "string", "format": "date-time"}, "aliases": {"type": "array", "items": {"type": "string"}}}},
      "Model": {"type": "object", "properties": {"name": {"type": "string"}, "versions": {"type": "array", "items": {"$ref": "#/components/schemas/ModelVersion"}}}}
    },
    "responses": {"Error": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}}
  },
  "security": [{"bearer": []}],
  "paths": {
    "/api/health": {"get": {"summary": "liveness", "security": [], "responses": {"200": {"description": "ok"}}}},
    "/api/runs": {
      "post": {"summary": "create a run (validated; 400 with file:line for bad data)", "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CreateRunRequest"}}}},
        "responses": {"201": {"description": "created", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Run"}}}}, "400": {"$ref": "#/components/responses/Error"}}},
      "get": {"summary": "list runs, newest first", "parameters": [
          {"name": "user", "in": "query", "schema": {"type": "string"}}, {"name": "experiment_path", "in": "query", "schema": {"type": "string"}},
          {"name": "status", "in": "query", "schema": {"type": "string"}, "description": "comma-separated states"},
          {"name": "created_after", "in": "query", "schema": {"type": "string", "format": "date-time"}},
          {"name": "created_before", "in": "query", "schema": {"type": "string", "format": "date-time"}},
          {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 100, "maximum": 1000}},
          {"name": "page_token", "in": "query", "schema": {"type": "string"}}],
        "responses": {"200": {"description": "a page", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RunList"}}}}}}},
    "/api/runs/cancel": {"post": {"summary": "cancel several runs or a whole experiment", "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CancelRequest"}}}},
      "responses": {"200": {"description": "runs acted on", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CancelResult"}}}}}}},
    "/api/runs/{name}": {
      "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
      "get": {"summary": "a run with events, checkpoints and latest metrics", "responses": {"200": {"description": "the run", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Run"}}}}, "404": {"$ref": "#/components/responses/Error"}}},
      "delete": {"summary": "delete a finished run (409 while it is active)", "responses": {"204": {"description": "deleted"}, "409": {"$ref": "#/components/responses/Error"}}}},
    "/api/runs/{name}/cancel": {"parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
      "post": {"summary": "cancel one run", "responses": {"200": {"description": "runs acted on", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CancelResult"}}}}}}},
    "/api/runs/{name}/events": {"parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}},
        {"name": "after", "in": "query", "schema": {"type": "integer"}, "description": "only events with a larger id"}],
      "get": {"summary": "the run's events", "responses": {"200": {"description": "{events: [Event]}"}}}},
    "/api/runs/{name}/metrics": {"parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
      "get": {"summary": "step and eval metric series", "responses": {"200": {"description": "series", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Metrics"}}}}}}},
    "/api/runs/{name}/checkpoints": {"parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
      "get": {"summary": "checkpoints", "responses": {"200": {"description": "{checkpoints: [Checkpoint]}"}}}},
    "/api/runs/{name}/prompt-outputs": {"parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
      "get": {"summary": "eval-prompt completions at each checkpoint", "responses": {"200": {"description": "{prompt_outputs: [...]}"}}}},
    "/api/experiments": {"get": {"summary": "experiments with run counts", "responses": {"200": {"description": "{experiments: [...]}"}}}},
    "/api/models": {"get": {"summary": "supported base models with licences", "responses": {"200": {"description": "{models: [...]}"}}}},
    "/api/catalog": {"post": {"summary": "create a catalog (main) or schema (main.demo)", "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "properties": {"name": {"type": "string"}, "comment": {"type": "string"}}}}}},
      "responses": {"201": {"description": "created"}, "409": {"$ref": "#/components/responses/Error"}}}},
    "/api/catalog/models/{name}": {"parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
      "get": {"summary": "a model's versions", "responses": {"200": {"description": "the model", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Model"}}}}}}},
    "/api/catalog/models/{name}/aliases/{alias}": {"parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}, {"name": "alias", "in": "path", "required": true, "schema": {"type": "string"}}],
      "put": {"summary": "point an alias at a version", "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "properties": {"version": {"type": "integer"}}}}}},
        "responses": {"200": {"description": "the model", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Model"}}}}}},
      "delete": {"summary": "remove an alias", "responses": {"204": {"description": "removed"}}}}
  }
}`
