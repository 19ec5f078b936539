CREATE DATABASE esg_ledger OWNER airflow;
