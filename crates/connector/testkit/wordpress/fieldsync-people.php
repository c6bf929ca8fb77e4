<?php
/**
 * Plugin Name: fieldsync people
 * Description: The member records fieldsync's REST connector is tested against: a `person`
 * post type at /wp-json/wp/v2/people whose fields are post meta.
 *
 * This is a must-use plugin: WordPress loads every file in wp-content/mu-plugins on every
 * request, so the test site needs no activation step.
 */

/** The person fields that hold text, each one post meta of the same name. */
const FIELDSYNC_PEOPLE_STRING_FIELDS = array(
	'knvb_id',
	'first_name',
	'last_name',
	'email',
	'email2',
	'mobile',
	'phone',
	'birth_date',
	'note',
	'remarks',
);

add_action( 'init', 'fieldsync_people_register' );

/**
 * Registers the `person` post type and its meta fields for the REST API.
 */
function fieldsync_people_register() {
	register_post_type(
		'person',
		array(
			'label'        => 'People',
			'public'       => false,
			'show_in_rest' => true,
			'rest_base'    => 'people',
			'supports'     => array( 'title', 'custom-fields' ),
			'map_meta_cap' => true,
		)
	);

	foreach ( FIELDSYNC_PEOPLE_STRING_FIELDS as $name ) {
		register_post_meta(
			'person',
			$name,
			array(
				'type'         => 'string',
				'single'       => true,
				'default'      => '',
				'show_in_rest' => true,
			)
		);
	}

	register_post_meta(
		'person',
		'financial_block',
		array(
			'type'         => 'boolean',
			'single'       => true,
			'default'      => false,
			'show_in_rest' => true,
		)
	);

	register_post_meta(
		'person',
		'contact_info',
		array(
			'type'         => 'array',
			'single'       => true,
			'default'      => array(),
			'show_in_rest' => array(
				'schema' => array(
					'type'  => 'array',
					'items' => array(
						'type'       => 'object',
						'properties' => array(
							'type'  => array( 'type' => 'string' ),
							'value' => array( 'type' => 'string' ),
						),
					),
				),
			),
		)
	);
}

add_filter( 'rest_pre_insert_person', 'fieldsync_people_check_email', 10, 2 );

/**
 * Refuses a create or an update whose `email` is not an email address, before anything of
 * it is stored: the REST API answers 400 `rest_invalid_param` with a message that names the
 * field. An empty `email` is allowed (a person without one). The value itself is left out
 * of the message, since messages end up in logs.
 *
 * @param stdClass        $post    The post about to be inserted or updated.
 * @param WP_REST_Request $request The request.
 * @return stdClass|WP_Error The post, or the error that stops the write.
 */
function fieldsync_people_check_email( $post, $request ) {
	$meta = $request['meta'];
	if ( is_array( $meta ) && isset( $meta['email'] ) && '' !== $meta['email'] && ! is_email( $meta['email'] ) ) {
		$message = 'meta.email is not a valid email address.';
		return new WP_Error(
			'rest_invalid_param',
			'Invalid parameter(s): meta.email (' . $message . ')',
			array(
				'status' => 400,
				'params' => array( 'meta.email' => $message ),
			)
		);
	}
	return $post;
}

add_filter( 'update_post_metadata', 'fieldsync_people_fail_contact_info', 10, 3 );

/**
 * A fault for tests: while the option `fieldsync_fail_contact_info` is set, storing a
 * person's `contact_info` fails as a database error would. The REST API then answers 500
 * after it has inserted the post and stored the meta fields registered before
 * `contact_info` (the `knvb_id` among them): a half-made person.
 *
 * @param null|bool $check     Whether to short-circuit the update.
 * @param int       $object_id The post.
 * @param string    $meta_key  The meta key.
 * @return null|bool False to fail the update, or `$check` as it was.
 */
function fieldsync_people_fail_contact_info( $check, $object_id, $meta_key ) {
	if ( 'contact_info' === $meta_key && get_option( 'fieldsync_fail_contact_info' ) ) {
		return false;
	}
	return $check;
}
