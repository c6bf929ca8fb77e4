<?php
/**
 * The router of PHP's built-in server for the test site: a file that exists is served as it
 * is (PHP files run), anything else goes to WordPress's front controller, the way Apache's
 * rewrite rules send pretty permalinks and /wp-json/... there.
 */

$fieldsync_root = rtrim( $_SERVER['DOCUMENT_ROOT'], '/' );
$fieldsync_path = urldecode( parse_url( $_SERVER['REQUEST_URI'], PHP_URL_PATH ) );

// Every request WordPress answers is logged beside the document root (`METHOD URI STATUS`),
// for tests that count what a client sent: the built-in server logs none that a router runs.
register_shutdown_function(
	function () {
		$line = $_SERVER['REQUEST_METHOD'] . ' ' . $_SERVER['REQUEST_URI'] . ' ' . http_response_code() . "\n";
		file_put_contents( dirname( $_SERVER['DOCUMENT_ROOT'] ) . '/requests.log', $line, FILE_APPEND | LOCK_EX );
	}
);

if ( '/' !== $fieldsync_path && is_file( $fieldsync_root . $fieldsync_path ) ) {
	return false;
}

$_SERVER['SCRIPT_FILENAME'] = $fieldsync_root . '/index.php';
$_SERVER['SCRIPT_NAME']     = '/index.php';
$_SERVER['PHP_SELF']        = '/index.php';
chdir( $fieldsync_root );
require $fieldsync_root . '/index.php';
