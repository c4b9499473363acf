-- Runs once, when the PostgreSQL volume is new: MLflow's database beside Optuna's (POSTGRES_DB).
CREATE DATABASE mlflow OWNER hcmbench;
