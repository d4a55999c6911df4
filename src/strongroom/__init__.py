"""Strongroom: a database backup service speaking the OpenStack Trove Backups API."""
