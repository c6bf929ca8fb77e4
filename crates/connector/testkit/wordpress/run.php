<?php
/**
 * Runs PHP code inside the test site, for test setup: loads WordPress, reads a JSON object
 * `{"code": ..., "input": ...}` from standard input and evaluates `code` with `$input` set
 * to the decoded `input`, as the site's administrator. Whatever the code prints is the
 * answer.
 *
 * Usage: php run.php DOCROOT < request.json
 */

$fieldsync_request = json_decode( stream_get_contents( STDIN ), true, 512, JSON_THROW_ON_ERROR );

$_SERVER['HTTP_HOST']       = '127.0.0.1';
$_SERVER['SERVER_NAME']     = '127.0.0.1';
$_SERVER['REQUEST_URI']     = '/';
$_SERVER['SERVER_PROTOCOL'] = 'HTTP/1.1';
require $argv[1] . '/wp-load.php';

wp_set_current_user( 1 );
$input = $fieldsync_request['input'];
eval( $fieldsync_request['code'] );
