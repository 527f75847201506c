-- Accounts on every MySQL of the stack (run by the image's entrypoint at first start,
-- before replication exists, so each server creates them locally).
SET SQL_LOG_BIN = 0;
CREATE USER 'pointsman'@'%' IDENTIFIED BY 'pointsman';
GRANT SUPER, PROCESS, REPLICATION SLAVE, REPLICATION CLIENT, RELOAD, SYSTEM_VARIABLES_ADMIN, REPLICATION_SLAVE_ADMIN ON *.* TO 'pointsman'@'%';
GRANT SELECT ON mysql.* TO 'pointsman'@'%';
CREATE USER 'repl'@'%' IDENTIFIED BY 'repl';
GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%';
CREATE USER 'monitor'@'%' IDENTIFIED BY 'monitor';
GRANT USAGE, REPLICATION CLIENT ON *.* TO 'monitor'@'%';
CREATE USER 'app'@'%' IDENTIFIED BY 'app';
GRANT ALL ON app.* TO 'app'@'%';
SET SQL_LOG_BIN = 1;
CREATE DATABASE IF NOT EXISTS app;
